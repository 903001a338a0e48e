//! etcdctl's txn syntax (`txn_command.go`), read line by line:
//!
//! ```text
//! value("k") = "v"          <- compares, one per line
//! mod("k2") > "3"
//!                           <- a blank line ends a section
//! put k "new value"         <- success ops: etcdctl command lines (put, get, del)
//! get k2 --prefix
//!
//! del k                     <- failure ops
//! ```
//!
//! Compare targets: `value`/`val`, `version`/`ver`, `create`/`c`, `mod`/`m`, `lease`
//! (hex, as `put --lease` takes it); operators `=` (or `==`), `!=`, `>`, `<`. Keys and
//! operands are Go-quoted strings. End of input also ends a section, so the trailing blank
//! lines etcdctl insists on are optional here.

use std::io::{BufRead, Write};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use etch_client::proto::{Compare, CompareResult, CompareTarget, RequestOp, TxnRequest};

use crate::kv::{DelArgs, GetArgs, PutArgs};

/// Reads the three sections from `input`. With `prompts`, writes etcdctl's interactive
/// prompts before each section.
pub fn read_txn(
    input: &mut dyn BufRead,
    mut prompts: Option<&mut dyn Write>,
) -> Result<TxnRequest> {
    let mut prompt = |text: &str| -> Result<()> {
        if let Some(w) = prompts.as_deref_mut() {
            writeln!(w, "{text}")?;
            w.flush()?;
        }
        Ok(())
    };
    prompt("compares:")?;
    let compare = section(input)?
        .iter()
        .map(|l| parse_compare(l))
        .collect::<Result<_>>()?;
    prompt("success requests (get, put, del):")?;
    let success = section(input)?
        .iter()
        .map(|l| parse_op(l))
        .collect::<Result<_>>()?;
    prompt("failure requests (get, put, del):")?;
    let failure = section(input)?
        .iter()
        .map(|l| parse_op(l))
        .collect::<Result<_>>()?;
    Ok(TxnRequest {
        compare,
        success,
        failure,
    })
}

/// Trimmed lines up to the next blank line or the end of input.
fn section(input: &mut dyn BufRead) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if input.read_line(&mut line).context("reading the txn")? == 0 {
            return Ok(lines);
        }
        let line = line.trim();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line.to_owned());
    }
}

/// Parses one compare line such as `mod("k") > "3"`.
pub fn parse_compare(line: &str) -> Result<Compare> {
    let malformed = |why: &str| anyhow!("malformed comparison: {line} ({why})");
    let (target, rest) = line
        .split_once('(')
        .ok_or_else(|| malformed("expected target(\"key\")"))?;
    let (key, rest) = go_unquote(rest.trim_start()).map_err(|e| malformed(&e))?;
    let rest = rest
        .trim_start()
        .strip_prefix(')')
        .ok_or_else(|| malformed("expected ')' after the key"))?
        .trim_start();
    let op_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (op, rest) = rest.split_at(op_len);
    let (operand, rest) = go_unquote(rest.trim_start()).map_err(|e| malformed(&e))?;
    if !rest.trim().is_empty() {
        return Err(malformed("unexpected text after the operand"));
    }
    let result = match op {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        "" => return Err(malformed("missing operator")),
        _ => return Err(malformed(&format!("unknown operator {op:?}"))),
    };
    let number = || -> Result<i64> {
        std::str::from_utf8(&operand)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("invalid txn compare request: {line} (expected a number)"))
    };
    let target = match target.trim() {
        "ver" | "version" => CompareTarget::Version(number()?),
        "c" | "create" => CompareTarget::CreateRevision(number()?),
        "m" | "mod" => CompareTarget::ModRevision(number()?),
        "val" | "value" => CompareTarget::Value(operand),
        "lease" => CompareTarget::Lease(
            std::str::from_utf8(&operand)
                .ok()
                .and_then(|s| i64::from_str_radix(s, 16).ok())
                .ok_or_else(|| {
                    anyhow!("invalid txn compare request: {line} (expected a hex lease ID)")
                })?,
        ),
        other => return Err(malformed(&format!("unknown target {other}"))),
    };
    Ok(Compare {
        key,
        range_end: Vec::new(),
        result,
        target,
    })
}

#[derive(Parser)]
#[command(no_binary_name = true, disable_help_subcommand = true)]
struct OpLine {
    #[command(subcommand)]
    op: OpCommand,
}

#[derive(Subcommand)]
enum OpCommand {
    Put(PutArgs),
    Get(GetArgs),
    Del(DelArgs),
}

/// Parses one operation line: `put KEY VALUE [flags]`, `get KEY [flags]`, `del KEY [flags]`.
pub fn parse_op(line: &str) -> Result<RequestOp> {
    let args = argify(line).map_err(|e| anyhow!("invalid txn request: {line} ({e})"))?;
    if args.len() < 2 {
        bail!("invalid txn request: {line}");
    }
    let parsed = OpLine::try_parse_from(&args).map_err(|e| {
        let first = e.to_string();
        let first = first
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ");
        anyhow!("invalid txn request: {line} ({first})")
    })?;
    let op = match parsed.op {
        OpCommand::Put(put) => {
            let value = (put.value.as_deref())
                .ok_or_else(|| anyhow!("invalid txn request: {line} (put needs a value)"))?;
            put.op(crate::kv::bytes(value))
        }
        OpCommand::Get(get) => get.op(),
        OpCommand::Del(del) => del.op(),
    };
    op.with_context(|| format!("invalid txn request: {line}"))
}

/// Splits a line into arguments like etcdctl's `Argify`: whitespace-separated words,
/// `"double quoted"` strings with Go escapes, `'single quoted'` strings taken literally.
pub fn argify(line: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('"') {
            let (bytes, after) = go_unquote(rest)?;
            args.push(String::from_utf8(bytes).map_err(|_| "argument is not UTF-8".to_string())?);
            rest = after;
        } else if let Some(quoted) = rest.strip_prefix('\'') {
            let end = quoted.find('\'').ok_or("unterminated ' quote")?;
            args.push(quoted[..end].to_owned());
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            args.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
        rest = rest.trim_start();
    }
    Ok(args)
}

/// Reads a Go quoted string (`"..."` with escapes, or a raw `` `...` ``) at the start of
/// `s`; returns its bytes and the rest of `s`.
pub fn go_unquote(s: &str) -> Result<(Vec<u8>, &str), String> {
    if let Some(raw) = s.strip_prefix('`') {
        let end = raw.find('`').ok_or("unterminated ` quote")?;
        return Ok((raw.as_bytes()[..end].to_vec(), &raw[end + 1..]));
    }
    let body = s.strip_prefix('"').ok_or("expected a quoted string")?;
    let mut out = Vec::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => {
                let (_, e) = chars.next().ok_or("unterminated \" quote")?;
                let mut digits = |n: usize, radix: u32| -> Result<u32, String> {
                    let text: String = (0..n)
                        .filter_map(|_| chars.next().map(|(_, c)| c))
                        .collect();
                    u32::from_str_radix(&text, radix)
                        .ok()
                        .filter(|_| text.len() == n)
                        .ok_or_else(|| format!("bad escape \\{e}{text}"))
                };
                match e {
                    'a' => out.push(7),
                    'b' => out.push(8),
                    'f' => out.push(12),
                    'n' => out.push(b'\n'),
                    'r' => out.push(b'\r'),
                    't' => out.push(b'\t'),
                    'v' => out.push(11),
                    '\\' | '"' | '\'' => out.push(e as u8),
                    // Both fit a byte: two hex digits, or three octal digits checked below.
                    'x' => out.push(digits(2, 16)? as u8),
                    '0'..='7' => {
                        let rest = digits(2, 8)?;
                        let value = (e as u32 - '0' as u32) * 64 + rest;
                        out.push(u8::try_from(value).map_err(|_| "octal escape above \\377")?);
                    }
                    'u' | 'U' => {
                        let n = if e == 'u' { 4 } else { 8 };
                        let c = char::from_u32(digits(n, 16)?).ok_or("bad unicode escape")?;
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    other => return Err(format!("unknown escape \\{other}")),
                }
            }
            '\n' => return Err("newline in a quoted string".into()),
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    Err("unterminated \" quote".into())
}

#[cfg(test)]
#[path = "txn_parse_test.rs"]
mod tests;
