//! ASCII tables as etcdctl draws them with olekukonko/tablewriter: `+---+` borders, one
//! space of padding, upper-case headers centred, cells aligned right (left for get).

use std::io::{self, Write};

use etch_proto::{MemberListResponse, RangeResponse};

use super::{
    EndpointHash, EndpointHealth, EndpointStatus, HASH_HEADER, MEMBER_HEADER, Printer,
    STATUS_HEADER, hash_row, hex_escaped, member_row, status_row,
};

/// How cells are aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Draws a table. Newlines inside cells are shown as `\n` so that rows stay one line.
pub fn render(header: &[&str], rows: &[Vec<String>], align: Align) -> String {
    let clean = |s: &str| s.replace('\n', "\\n");
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c)).collect())
        .collect();
    let header: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    let width = |i: usize| {
        rows.iter()
            .filter_map(|r| r.get(i))
            .chain(std::iter::once(&header[i]))
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let border: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let mut out = border.clone();
    for (h, w) in header.iter().zip(&widths) {
        // tablewriter centres with the odd space on the right.
        let gap = w - h.chars().count();
        let left = gap / 2;
        out += &format!("| {}{}{} ", " ".repeat(left), h, " ".repeat(gap - left));
    }
    out += "|\n";
    out += &border;
    for row in &rows {
        for (i, w) in widths.iter().enumerate() {
            let cell = row.get(i).map_or("", String::as_str);
            out += &match align {
                Align::Left => format!("| {cell:<w$} "),
                Align::Right => format!("| {cell:>w$} "),
            };
        }
        out += "|\n";
    }
    out += &border;
    out
}

pub(super) fn get(w: &mut dyn Write, p: &Printer, resp: &RangeResponse) -> io::Result<()> {
    let show = |bytes: &[u8]| {
        if p.hex {
            hex_escaped(bytes)
        } else {
            String::from_utf8_lossy(bytes).into_owned()
        }
    };
    let rows: Vec<Vec<String>> = resp
        .kvs
        .iter()
        .map(|kv| {
            vec![
                show(&kv.key),
                show(&kv.value),
                kv.create_revision.to_string(),
                kv.mod_revision.to_string(),
                kv.version.to_string(),
                if kv.lease == 0 {
                    String::new()
                } else {
                    format!("{:x}", kv.lease)
                },
            ]
        })
        .collect();
    let header = [
        "key",
        "value",
        "create revision",
        "mod revision",
        "version",
        "lease",
    ];
    write!(w, "{}", render(&header, &rows, Align::Left))
}

pub(super) fn status(w: &mut dyn Write, statuses: &[EndpointStatus]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = statuses.iter().map(status_row).collect();
    write!(w, "{}", render(&STATUS_HEADER, &rows, Align::Right))
}

pub(super) fn hash_kv(w: &mut dyn Write, hashes: &[EndpointHash]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = hashes.iter().map(hash_row).collect();
    write!(w, "{}", render(&HASH_HEADER, &rows, Align::Right))
}

pub(super) fn member_list(w: &mut dyn Write, resp: &MemberListResponse) -> io::Result<()> {
    let rows: Vec<Vec<String>> = resp.members.iter().map(member_row).collect();
    write!(w, "{}", render(&MEMBER_HEADER, &rows, Align::Right))
}

pub(super) fn health(w: &mut dyn Write, health: &[EndpointHealth]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = health
        .iter()
        .map(|h| {
            vec![
                h.endpoint.clone(),
                h.healthy.to_string(),
                h.took.clone(),
                h.error.clone(),
            ]
        })
        .collect();
    write!(
        w,
        "{}",
        render(
            &["endpoint", "health", "took", "error"],
            &rows,
            Align::Right
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_tablewriter() {
        let rows = vec![vec![
            "127.0.0.1:2379".to_string(),
            "true".into(),
            String::new(),
        ]];
        let table = render(&["endpoint", "ID", "errors"], &rows, Align::Right);
        assert_eq!(
            table,
            "+----------------+------+--------+\n\
             |    ENDPOINT    |  ID  | ERRORS |\n\
             +----------------+------+--------+\n\
             | 127.0.0.1:2379 | true |        |\n\
             +----------------+------+--------+\n"
        );
    }

    #[test]
    fn odd_gaps_put_the_extra_space_right() {
        let rows = vec![vec!["abcd".to_string()]];
        let table = render(&["ab c"], &rows, Align::Left);
        assert!(table.contains("| AB C |"), "{table}");
        let rows = vec![vec!["abcde".to_string()]];
        let table = render(&["id"], &rows, Align::Left);
        assert!(table.contains("|  ID   |"), "{table}");
        assert!(table.contains("| abcde |"), "{table}");
    }

    #[test]
    fn get_table_has_one_row_per_key() {
        let resp = RangeResponse {
            kvs: vec![etch_proto::KeyValue {
                key: b"k".to_vec(),
                value: b"line1\nline2".to_vec(),
                create_revision: 2,
                mod_revision: 3,
                version: 2,
                lease: 0x1f,
            }],
            count: 1,
            ..Default::default()
        };
        let mut out = Vec::new();
        get(&mut out, &Printer::default(), &resp).expect("print");
        let out = String::from_utf8(out).expect("utf-8");
        assert!(
            out.contains(
                "| k   | line1\\nline2 | 2               | 3            | 2       | 1f    |"
            ),
            "{out}"
        );
    }
}
