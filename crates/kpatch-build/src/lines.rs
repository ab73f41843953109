//! Keeping line numbers: after a patch, every line outside the changed regions of a C source or
//! header keeps the number it had, so that `__LINE__` (in `WARN`, `BUG`, assertions, fortify's
//! messages, `pr_*` call sites, the bug table) never moves in code the patch did not touch.
//!
//! The patched text gets a `#line N` directive before the first unchanged line after each change
//! whose line count differs from what it replaced (N is that line's number in the original). The
//! file name is left as it is (`#line N` keeps it), so `__FILE__` does not change either. A
//! directive is never put inside a block comment or after a line that ends in a backslash (a
//! macro definition or string continued on the next line): it goes to the next line where it is
//! safe. The kernel's klp-build does the same to its patched sources.

use similar::{DiffOp, TextDiff};

/// The patched text with `#line` directives that give unchanged lines their original numbers,
/// and the number of directives added.
pub fn keep_line_numbers(original: &str, patched: &str) -> (String, usize) {
    let diff = TextDiff::from_lines(original, patched);
    let new_lines: Vec<&str> = patched.split_inclusive('\n').collect();
    let safe = safe_points(&new_lines);
    // new line index -> original line number (1-based) for a directive before it
    let mut directives: Vec<(usize, usize)> = Vec::new();
    let mut offset: isize = 0; // new index - old index along equal runs
    for op in diff.ops() {
        let DiffOp::Equal {
            old_index,
            new_index,
            len,
        } = *op
        else {
            continue;
        };
        let here = new_index as isize - old_index as isize;
        if here == offset {
            continue;
        }
        // The first line of the run where a directive may go.
        if let Some(k) = (0..len).find(|&k| safe[new_index + k]) {
            directives.push((new_index + k, old_index + k + 1));
            offset = here;
        }
    }
    if directives.is_empty() {
        return (patched.to_string(), 0);
    }
    let mut out = String::with_capacity(patched.len() + 16 * directives.len());
    let mut next = directives.iter().peekable();
    for (i, line) in new_lines.iter().enumerate() {
        if let Some(&&(at, number)) = next.peek() {
            if at == i {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&format!("#line {number}\n"));
                next.next();
            }
        }
        out.push_str(line);
    }
    (out, directives.len())
}

/// For each line: whether a directive may be put right before it (not inside a block comment,
/// not after a backslash continuation).
fn safe_points(lines: &[&str]) -> Vec<bool> {
    let mut out = Vec::with_capacity(lines.len());
    let mut in_comment = false;
    let mut continued = false;
    for line in lines {
        out.push(!in_comment && !continued);
        let body = line.trim_end_matches(['\n', '\r']);
        continued = body.ends_with('\\');
        in_comment = ends_in_comment(body, in_comment);
    }
    out
}

/// Whether a block comment is open at the end of `line`, given whether one was at its start.
/// String and character literals are skipped so that `"/*"` opens nothing.
fn ends_in_comment(line: &str, mut in_comment: bool) -> bool {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if in_comment {
            if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                in_comment = false;
                i += 2;
                continue;
            }
            i += 1;
            continue;
        }
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'*') => {
                in_comment = true;
                i += 2;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => return false,
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    in_comment
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line number each line of `text` has for the preprocessor, honouring `#line N`.
    fn numbered(text: &str) -> Vec<(usize, String)> {
        let mut n = 1;
        let mut out = Vec::new();
        for l in text.lines() {
            if let Some(v) = l.strip_prefix("#line ") {
                n = v.trim().parse().unwrap();
                continue;
            }
            out.push((n, l.to_string()));
            n += 1;
        }
        out
    }

    fn number_of(text: &str, line: &str) -> usize {
        numbered(text)
            .into_iter()
            .find(|(_, l)| l == line)
            .unwrap_or_else(|| panic!("no {line:?}"))
            .0
    }

    const ORIG: &str =
        "int a;\nint f(void)\n{\n\treturn 1;\n}\nint g(void)\n{\n\tWARN_ON(1);\n\treturn 2;\n}\n";

    #[test]
    fn unchanged_lines_keep_their_numbers_after_an_insertion() {
        let patched = ORIG.replace("\treturn 1;\n", "\tint x = 1;\n\n\treturn x;\n");
        let (out, n) = keep_line_numbers(ORIG, &patched);
        assert_eq!(n, 1, "{out}");
        assert_eq!(number_of(&out, "\tWARN_ON(1);"), 8);
        assert_eq!(number_of(&out, "int g(void)"), 6);
        // The changed lines themselves are numbered from the change on.
        assert_eq!(number_of(&out, "\tint x = 1;"), 4);
    }

    #[test]
    fn a_blank_line_at_the_top_changes_no_number_below_it() {
        let patched = format!("\n{ORIG}");
        let (out, _) = keep_line_numbers(ORIG, &patched);
        let got = numbered(&out);
        let want: Vec<(usize, String)> = ORIG
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.to_string()))
            .collect();
        assert_eq!(got[1..], want[..], "{out}");
    }

    #[test]
    fn deletions_and_no_change() {
        let patched = ORIG.replace("int a;\n", "");
        let (out, n) = keep_line_numbers(ORIG, &patched);
        assert_eq!((n, number_of(&out, "\tWARN_ON(1);")), (1, 8));
        // Same number of lines: nothing to do.
        let same = ORIG.replace("return 1", "return 3");
        assert_eq!(keep_line_numbers(ORIG, &same), (same.clone(), 0));
    }

    #[test]
    fn never_inside_a_comment_or_a_continued_line() {
        let orig = "/*\n * doc\n */\n#define M(x) \\\n\t(x)\nint z;\n";
        let patched = "/* new */\n/*\n * doc\n */\n#define M(x) \\\n\t(x)\nint z;\n";
        let (out, n) = keep_line_numbers(orig, patched);
        assert_eq!(n, 1);
        // Right after the inserted comment line, before the comment that follows (safe).
        assert!(out.starts_with("/* new */\n#line 1\n/*\n"), "{out}");
        let inside = "int q;\n/* a\n b */\nint z;\n";
        let patched = "int q;\n/* a\n new\n b */\nint z;\n";
        let (out, _) = keep_line_numbers(inside, patched);
        assert!(
            !out.contains("new\n#line") && out.contains(" b */\n#line 4\nint z;"),
            "{out}"
        );
        assert_eq!(number_of(&out, "int z;"), 4);
        let mac = "#define A \\\n\t1\nint z;\n";
        let patched = "#define A \\\n\t2 + \\\n\t1\nint z;\n";
        let (out, _) = keep_line_numbers(mac, patched);
        assert!(out.contains("\t1\n#line 3\nint z;"), "{out}");
    }

    #[test]
    fn comment_markers_in_strings_are_not_comments() {
        assert!(!ends_in_comment("char *s = \"/*\";", false));
        assert!(ends_in_comment("x; /* open", false));
        assert!(!ends_in_comment("still */ y;", true));
        assert!(!ends_in_comment("a; // /* no", false));
        assert!(!ends_in_comment("c = '\"'; /* x */", false));
    }
}
