//! The txn syntax: good and bad input.

use etch_client::proto::{
    CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
};

use super::*;

#[test]
fn compares_of_every_target() {
    let c = parse_compare(r#"value("k") = "v""#).expect("value");
    assert_eq!(
        (c.key.as_slice(), c.result, c.target),
        (
            &b"k"[..],
            CompareResult::Equal,
            CompareTarget::Value(b"v".to_vec())
        )
    );
    let c = parse_compare(r#"mod("k") > "3""#).expect("mod");
    assert_eq!(
        (c.result, c.target),
        (CompareResult::Greater, CompareTarget::ModRevision(3))
    );
    let c = parse_compare(r#"create("k") < "2""#).expect("create");
    assert_eq!(
        (c.result, c.target),
        (CompareResult::Less, CompareTarget::CreateRevision(2))
    );
    let c = parse_compare(r#"version("k") != "1""#).expect("version");
    assert_eq!(
        (c.result, c.target),
        (CompareResult::NotEqual, CompareTarget::Version(1))
    );
    let c = parse_compare(r#"lease("k") == "1f""#).expect("lease");
    assert_eq!(c.target, CompareTarget::Lease(31));
    let c = parse_compare(r#"ver("k")="1""#);
    assert!(
        c.is_err(),
        "the operator must be separated from the operand"
    );
    let c = parse_compare(r#"val("a \"q\"\x00") = `raw\n`"#).expect("escapes");
    assert_eq!(c.key, b"a \"q\"\x00".to_vec());
    assert_eq!(c.target, CompareTarget::Value(b"raw\\n".to_vec()));
}

#[test]
fn bad_compares_say_why() {
    for (line, why) in [
        (r#"value "k" = "v""#, "expected target"),
        (r#"value(k) = "v""#, "expected a quoted string"),
        (r#"value("k" = "v""#, "expected ')'"),
        (r#"value("k") ~ "v""#, "unknown operator"),
        (r#"value("k") = v"#, "expected a quoted string"),
        (r#"value("k") = "v" extra"#, "unexpected text"),
        (r#"colour("k") = "v""#, "unknown target colour"),
        (r#"mod("k") > "three""#, "expected a number"),
        (r#"value("k) = v"#, "unterminated"),
    ] {
        let err = parse_compare(line).expect_err(line).to_string();
        assert!(err.contains(why), "{line}: {err}");
    }
}

#[test]
fn ops_are_etcdctl_command_lines() {
    assert_eq!(
        parse_op(r#"put k "hello world" --prev-kv"#).expect("put"),
        RequestOp::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"hello world".to_vec(),
            prev_kv: true,
            ..PutRequest::default()
        })
    );
    assert_eq!(
        parse_op("get /a --prefix --keys-only").expect("get"),
        RequestOp::Range(RangeRequest {
            key: b"/a".to_vec(),
            range_end: b"/b".to_vec(),
            keys_only: true,
            ..Default::default()
        })
    );
    assert_eq!(
        parse_op("del 'a b' c").expect("del"),
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: b"a b".to_vec(),
            range_end: b"c".to_vec(),
            prev_kv: false,
        })
    );
    for bad in [
        "put k",
        "watch k",
        "get",
        "get k --bogus",
        "put k v --lease xyz",
        "del 'k",
    ] {
        let err = parse_op(bad).expect_err(bad).to_string();
        assert!(err.starts_with("invalid txn request:"), "{bad}: {err}");
    }
}

#[test]
fn sections_are_separated_by_blank_lines() {
    let input = "value(\"k\") = \"v\"\nmod(\"k\") > \"1\"\n\nput k w\nget k\n\ndel k\n\n";
    let txn = read_txn(&mut input.as_bytes(), None).expect("txn");
    assert_eq!(txn.compare.len(), 2);
    assert_eq!(txn.success.len(), 2);
    assert_eq!(txn.failure.len(), 1);

    // No trailing blank lines, no failure section: end of input ends them.
    let txn = read_txn(&mut "\nput a b".as_bytes(), None).expect("short");
    assert!(txn.compare.is_empty());
    assert_eq!(txn.success.len(), 1);
    assert!(txn.failure.is_empty());

    let err = read_txn(
        &mut "value(\"k\") = \"v\"\n\nfrobnicate k\n".as_bytes(),
        None,
    )
    .expect_err("bad op");
    assert!(err.to_string().contains("frobnicate"), "{err}");
}

#[test]
fn interactive_mode_prompts_each_section() {
    let mut prompts = Vec::new();
    read_txn(&mut "\n\n\n".as_bytes(), Some(&mut prompts)).expect("txn");
    assert_eq!(
        String::from_utf8(prompts).expect("utf-8"),
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n"
    );
}

#[test]
fn argify_handles_quotes() {
    assert_eq!(
        argify(r#"put "a\tb" 'c d'  e"#).expect("args"),
        ["put", "a\tb", "c d", "e"]
    );
    assert!(argify(r#"put "open"#).is_err());
}
