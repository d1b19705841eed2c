//! Plain-text tables for people: left-aligned columns two spaces apart, no trailing blanks.

/// Renders `rows` (the first is the header) as aligned columns, one line each.
pub(crate) fn render<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The last characters of a peer id: enough to tell nodes apart in a table.
pub(crate) fn short_peer(peer: &str) -> String {
    let tail = peer
        .char_indices()
        .rev()
        .nth(7)
        .map_or(0, |(index, _)| index);
    format!("…{}", &peer[tail..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_end_clean() {
        let rows = [
            ["NAME".to_string(), "X".into(), "".into()],
            ["a-long-name".into(), "1".into(), "".into()],
        ];
        assert_eq!(render(&rows), "NAME         X\na-long-name  1\n");
    }

    #[test]
    fn short_peers_keep_the_tail() {
        assert_eq!(
            short_peer("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"),
            "…4kx6nXTN"
        );
        assert_eq!(short_peer("abc"), "…abc");
    }
}
