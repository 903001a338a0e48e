//! The versions of the contract a node serves: a 0.2.0 component learns its binding's
//! prefix and has its optional `init` run with the binding's configuration; a 0.1.0
//! component (the WATs of the other tests) is served beside it; any other version is
//! refused when it is compiled, naming the versions served.

use etch_proto::plugin::{PluginBinding, PluginHook, PluginInstallRequest};
use etch_proto::{Error as ProtoError, PutRequest, Request};
use sha2::{Digest, Sha256};

use super::PluginError;
use super::limits_test::{BUMP_ALLOC, Fixture, encode_component};

/// A 0.2.0 validator: `init` fails ("no config wanted") when the binding has settings;
/// `validate` denies every write with its binding's prefix (read through the `binding`
/// import) as the reason.
fn prefix_teller() -> Vec<u8> {
    let wat = format!(
        r#"(module
          (import "etch:plugin/binding@0.2.0" "prefix" (func $prefix (param i32)))
          (memory (export "memory") 1)
          (global $heap (mut i32) (i32.const 4096))
          (data (i32.const 100) "nope")
          (data (i32.const 200) "no config wanted")
          {BUMP_ALLOC}
          (func (export "init") (param i32 i32) (result i32)
            (if (i32.eqz (local.get 1))
              (then (i32.store8 (i32.const 48) (i32.const 0)) (return (i32.const 48))))
            (i32.store8 (i32.const 48) (i32.const 1))
            (i32.store (i32.const 52) (i32.const 200))
            (i32.store (i32.const 56) (i32.const 16))
            (i32.const 48))
          (func (export "validate") (param i32 i32 i32 i32 i64 i32 i32) (result i32)
            (call $prefix (i32.const 64))
            (i32.store8 (i32.const 16) (i32.const 1))
            (i32.store (i32.const 20) (i32.const 100))
            (i32.store (i32.const 24) (i32.const 4))
            (i32.store (i32.const 28) (i32.load (i32.const 64)))
            (i32.store (i32.const 32) (i32.load (i32.const 68)))
            (i32.const 16)))"#
    );
    encode_component(&wat, "validator")
}

fn install(f: &Fixture, name: &str, wasm: Vec<u8>, config: Vec<(String, String)>) {
    let req = PluginInstallRequest {
        binding: PluginBinding {
            name: name.into(),
            prefix: format!("/v2/{name}/").into_bytes(),
            config,
            ..Default::default()
        },
        wasm,
        installed_by: "root".into(),
    };
    let outcome = f.store.plugin_install(&req, b"applied").expect("storage");
    assert!(outcome.is_ok(), "{outcome:?}");
}

fn put(f: &Fixture, name: &str) -> Result<crate::mvcc::Guard, ProtoError> {
    let req = Request::Put(PutRequest {
        key: format!("/v2/{name}/k").into_bytes(),
        value: b"v".to_vec(),
        ..Default::default()
    });
    f.plugins.judge(&f.store, "alice", &req)
}

#[test]
fn a_0_2_validator_learns_its_prefix_and_its_init_sees_the_configuration() {
    let f = Fixture::new();
    install(&f, "teller", prefix_teller(), Vec::new());
    let Err(ProtoError::PluginRejected { code, reason, .. }) = put(&f, "teller") else {
        panic!("the teller denies every write");
    };
    assert_eq!((code.as_str(), reason.as_str()), ("nope", "/v2/teller/"));

    let config = vec![("k".to_owned(), "v".to_owned())];
    install(&f, "fussy", prefix_teller(), config);
    let Err(ProtoError::PluginFailed { cause, .. }) = put(&f, "fussy") else {
        panic!("init refuses any configuration, and the binding fails closed");
    };
    assert_eq!(cause, "init failed: no config wanted");
    // The engine goes on serving the other binding.
    let Err(ProtoError::PluginRejected { reason, .. }) = put(&f, "teller") else {
        panic!("still judged");
    };
    assert_eq!(reason, "/v2/teller/");
}

#[test]
fn a_component_of_another_version_is_refused_naming_the_versions_served() {
    let f = Fixture::new();
    let wasm = wat::parse_str(r#"(component (import "etch:plugin/log@0.3.0" (instance)))"#)
        .expect("component");
    let sha = Sha256::digest(&wasm);
    let Err(PluginError::Invalid(why)) = f.plugins.check(&sha, PluginHook::Validate, &wasm) else {
        panic!("0.3.0 is not served");
    };
    assert_eq!(
        why,
        "this component was built against etch:plugin@0.3.0; this node serves 0.1.0 and 0.2.0"
    );
}
