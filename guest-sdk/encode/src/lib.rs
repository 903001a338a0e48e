//! Making the WebAssembly components etch loads.
//!
//! [`encode`] wraps a core module built for `wasm32-unknown-unknown` (whose world
//! `wit-bindgen` embedded) in a component, as `etch-plugin build` and `etch-plugin encode`
//! do; [`world`] names the world it was built for.
//! [`wat`] builds components from hand-written WAT modules: the hostile plugins of the
//! test suite and of `etch-bench hostile`, which no Rust guest would compile to.

use anyhow::{Context, Result};
use wit_component::ComponentEncoder;

/// The component wrapping `module`, a core module with its world embedded.
///
/// # Errors
///
/// The input is already a component or no WebAssembly at all, the module has no embedded
/// world, or does not match it.
pub fn encode(module: &[u8]) -> Result<Vec<u8>> {
    check_core_module(module)?;
    ComponentEncoder::default()
        .module(module)
        .context(
            "reading the module's embedded world (was it built with the etch-plugin guest SDK,              by `etch-plugin build`?)",
        )?
        .validate(true)
        .encode()
        .context("encoding the component")
}

/// The versions of etch's WIT this tool knows, newest first, with their text.
const CONTRACTS: [(&str, &str); 2] = [
    ("0.2.0", include_str!("../../wit/etch.wit")),
    ("0.1.0", include_str!("../../wit-0.1.0/etch.wit")),
];

/// Embeds `world` of etch's WIT in `module`, as `wit-bindgen` does for a Rust plugin: for a
/// module written in another language against the canonical ABI by hand (`etch-plugin
/// encode --world`). `world` is a name of the newest version (`validator`, `reactor`, or
/// `validator-core` and `reactor-core` for a module without `init`), or `NAME@VERSION`
/// for an older one (`validator@0.1.0`).
///
/// # Errors
///
/// No such world or version.
pub fn embed_world(module: &mut Vec<u8>, world: &str) -> Result<()> {
    let (name, version) = world.split_once('@').unwrap_or((world, CONTRACTS[0].0));
    let Some((_, wit)) = CONTRACTS.iter().find(|(v, _)| *v == version) else {
        let known: Vec<&str> = CONTRACTS.iter().map(|(v, _)| *v).collect();
        anyhow::bail!(
            "no version {version} of etch:plugin (this tool knows {})",
            known.join(", ")
        );
    };
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve.push_str("etch.wit", wit)?;
    let world = resolve.select_world(&[pkg], Some(name)).with_context(|| {
        format!(
            "no world {name} in etch:plugin@{version} (validator, reactor{})",
            if version == "0.1.0" {
                ""
            } else {
                ", validator-core, reactor-core"
            }
        )
    })?;
    wit_component::embed_component_metadata(
        module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
        false,
    )
}

/// The kind of plugin `module` was built as, by what its embedded world exports:
/// `validator` (`validate`) or `reactor` (`on-events`).
///
/// # Errors
///
/// The module is not a core module, has no embedded world, or exports neither.
pub fn world(module: &[u8]) -> Result<String> {
    check_core_module(module)?;
    let (_, bindgen) =
        wit_component::metadata::decode(module).context("reading the module's embedded world")?;
    let resolve = &bindgen.resolve;
    let exports: Vec<String> = resolve.worlds[bindgen.world]
        .exports
        .keys()
        .map(|key| resolve.name_world_key(key))
        .collect();
    if exports.iter().any(|e| e == "validate") {
        Ok("validator".into())
    } else if exports.iter().any(|e| e == "on-events") {
        Ok("reactor".into())
    } else {
        anyhow::bail!(
            "the module exports neither `validate` nor `on-events` ({exports:?}): was it built \
             with the etch-plugin guest SDK?"
        )
    }
}

/// WebAssembly's magic, then the version: 1 for a core module, 0x0d (and layer 1) for a
/// component.
fn check_core_module(bytes: &[u8]) -> Result<()> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => {
            anyhow::bail!("this is already a component: install it as it is")
        }
        _ => anyhow::bail!("this is not a WebAssembly module"),
    }
}

/// Components from WAT, against etch's own WIT (`guest-sdk/wit/etch.wit`).
pub mod wat {
    use anyhow::{Context, Result};

    /// The canonical ABI's `cabi_realloc` as a bump allocator over a `$heap` global the
    /// module declares (it never frees, and grows memory as needed).
    pub const BUMP_ALLOC: &str = r#"(func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and
      (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
      (i32.sub (i32.const 0) (local.get 2))))
    (global.set $heap (i32.add (local.get $p) (local.get 3)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow
        (i32.add (i32.const 1) (i32.div_u (global.get $heap) (i32.const 65536)))))))
    (local.get $p))"#;

    /// A validator that logs "spinning" (so a caller can see a call has started) and then
    /// loops for ever: only fuel, the deadline or an interruption ends it.
    pub const SPINNING_VALIDATOR: &str = r#"(module
      (import "etch:plugin/log@0.1.0" "log" (func $log (param i32 i32 i32)))
      (memory (export "memory") 1)
      (global $heap (mut i32) (i32.const 4096))
      (data (i32.const 100) "spinning")
      CABI_REALLOC
      (func (export "validate") (param i32 i32 i32 i32 i64 i32 i32) (result i32)
        (call $log (i32.const 1) (i32.const 100) (i32.const 8))
        (loop $l (br $l))
        (unreachable)))"#;

    /// A component of `world` (as [`embed_world`](super::embed_world) takes it: the WATs
    /// here are written against `validator@0.1.0`) from a core module in WAT; the text
    /// `CABI_REALLOC` in it stands for [`BUMP_ALLOC`].
    ///
    /// # Errors
    ///
    /// The WAT does not parse, or does not match the world.
    pub fn component(wat: &str, world: &str) -> Result<Vec<u8>> {
        let mut module =
            ::wat::parse_str(wat.replace("CABI_REALLOC", BUMP_ALLOC)).context("parsing the WAT")?;
        super::embed_world(&mut module, world)?;
        super::encode(&module)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_spinning_validator_encodes() {
            let wasm =
                super::component(super::SPINNING_VALIDATOR, "validator@0.1.0").expect("component");
            assert!(wasm.starts_with(b"\0asm"));
            assert!(super::component(super::SPINNING_VALIDATOR, "reactor@0.1.0").is_err());
            let newest = super::component(super::SPINNING_VALIDATOR, "validator")
                .expect_err("0.2.0's validator exports init, and its imports are 0.2.0's");
            assert!(
                format!("{newest:#}").contains("init") || format!("{newest:#}").contains("0.1.0"),
                "{newest:#}"
            );
            let unknown = super::component(super::SPINNING_VALIDATOR, "validator@9.0.0")
                .expect_err("no such version");
            assert!(unknown.to_string().contains("0.2.0, 0.1.0"), "{unknown:#}");
        }
    }
}
