//! A line diff (longest common subsequence) for the pipeline editor's "diff before save".

/// One line of a diff: kept (` `), removed (`-`) or added (`+`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub op: char,
    pub text: String,
}

/// Documents longer than this (lines × lines) are shown as all removed, then all added.
const MAX_CELLS: usize = 4_000_000;

pub fn lines(old: &str, new: &str) -> Vec<Line> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let line = |op, t: &str| Line { op, text: t.to_string() };
    if a.len().saturating_mul(b.len()) > MAX_CELLS {
        return a.iter().map(|t| line('-', t)).chain(b.iter().map(|t| line('+', t))).collect();
    }
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] =
                if a[i] == b[j] { lcs[at(i + 1, j + 1)] + 1 } else { lcs[at(i + 1, j)].max(lcs[at(i, j + 1)]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(n + m));
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(line(' ', a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[at(i, j + 1)] >= lcs[at(i + 1, j)]) {
            out.push(line('+', b[j]));
            j += 1;
        } else {
            out.push(line('-', a[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(d: &[Line]) -> String {
        d.iter().map(|l| format!("{}{}\n", l.op, l.text)).collect()
    }

    #[test]
    fn changed_lines_only() {
        let d = lines("a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!(render(&d), " a\n+B\n-b\n c\n+d\n");
        assert!(lines("x\ny\n", "x\ny\n").iter().all(|l| l.op == ' '));
        assert_eq!(render(&lines("", "new\n")), "+new\n");
    }
}
