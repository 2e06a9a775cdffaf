//! The scenarios' tables: rows of cells in columns as wide as their widest cell, text
//! left-aligned and numbers right-aligned, two spaces apart and indented like the demo's reconciliation table.

/// Renders `rows` (the first is the header) as aligned text, one line per row.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    // A column is numeric when every cell below the header reads as a number (a signed
    // or decimal figure, possibly with a unit after a space): those line up on the right.
    let numeric: Vec<bool> = (0..columns)
        .map(|column| {
            rows.iter()
                .skip(1)
                .filter_map(|row| row.get(column))
                .all(|cell| is_number(cell))
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            let width = widths[column];
            if numeric[column] {
                line.push_str(&format!("  {cell:>width$}"));
            } else {
                line.push_str(&format!("  {cell:<width$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn is_number(cell: &str) -> bool {
    let figure = cell.split(' ').next().unwrap_or("");
    let figure = figure.strip_prefix('+').unwrap_or(figure);
    !figure.is_empty() && figure.parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_and_numbers_align_right() {
        let rows = vec![
            vec!["group".to_owned(), "copies".to_owned()],
            vec!["order".to_owned(), "1".to_owned()],
            vec!["logging".to_owned(), "12".to_owned()],
        ];
        assert_eq!(
            render(&rows),
            "  group    copies\n  order         1\n  logging      12\n"
        );
        assert!(is_number("+3.2 ms") && !is_number("-") && !is_number("sms"));
    }
}
