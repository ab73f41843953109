//! Whether a header change can change a unit's object, from the unit preprocessed without and
//! with the patch ([`compare`]).
//!
//! The two outputs are split into C tokens (line markers dropped: the patched sources keep
//! their line numbers with `#line`, and `__LINE__` is already a number in the output). Equal
//! tokens: the compiler sees the same program. Otherwise the tokens are split into top-level
//! items (a function definition, or a declaration up to its `;`), and each item is a root (it
//! emits code or data by itself: a variable, a function that is not `static inline`, a
//! `#pragma`, a top-level `asm`) or not (a `static inline` function, a prototype, an `extern`
//! declaration, a `typedef`, a `struct`/`union`/`enum` definition). An item is used when a name
//! it defines occurs in a root or in a used item. When every difference lies inside items
//! unused on its side, no code or data can differ: gcc emits nothing for an unreferenced
//! `static inline` function or a declaration. Anything this reading does not recognise counts
//! as a root, so the answer errs towards compiling.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use similar::{DiffOp, DiffTag};

/// What a change does to one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The same tokens with and without the patch.
    Identical,
    /// Every difference is inside definitions or declarations the unit never uses; the names
    /// they define (functions, types), sorted.
    UnusedOnly(Vec<String>),
    /// A difference can reach the unit's code. `distance`: 0 when a root itself differs, else
    /// how many references lie between the unit's own code and the nearest changed item.
    Reaches { distance: usize },
}

/// Multi-character punctuators, longest first (maximal munch: `+ +` and `++` differ).
const PUNCT: &[&str] = &[
    "...", "<<=", ">>=", "->", "++", "--", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "*=",
    "/=", "%=", "+=", "-=", "&=", "^=", "|=", "##", "<:", ":>", "<%", "%>",
];

/// The tokens of preprocessed C. Line markers (`# 12 "file"`, `#line`) are dropped; any other
/// directive line (`#pragma`) is one token.
pub fn tokens(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(text.len() / 5);
    let mut i = 0;
    let mut line_start = true;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line_start = true;
            i += 1;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' && line_start {
            let end = text[i..].find('\n').map_or(b.len(), |e| i + e);
            let rest = text[i + 1..end].trim_start();
            let marker =
                rest.starts_with(|ch: char| ch.is_ascii_digit()) || rest.starts_with("line");
            if !marker {
                out.push(text[i..end].trim_end());
            }
            i = end;
            continue;
        }
        line_start = false;
        let start = i;
        if c.is_ascii_alphabetic() || c == b'_' || c == b'$' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$') {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            i += 1;
            while i < b.len() {
                let d = b[i];
                let sign =
                    matches!(d, b'+' | b'-') && matches!(b[i - 1], b'e' | b'E' | b'p' | b'P');
                if sign || d.is_ascii_alphanumeric() || d == b'_' || d == b'.' {
                    i += 1;
                } else {
                    break;
                }
            }
        } else if c == b'"' || c == b'\'' {
            i += 1;
            while i < b.len() && b[i] != c && b[i] != b'\n' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
        } else {
            i += PUNCT
                .iter()
                .find(|p| text[i..].starts_with(*p))
                .map_or(1, |p| p.len());
            // Stay on a character boundary whatever the byte was.
            while !text.is_char_boundary(i) {
                i += 1;
            }
        }
        out.push(&text[start..i]);
    }
    out
}

/// C keywords and GNU spellings that name no entity of the unit.
fn is_keyword(t: &str) -> bool {
    matches!(
        t,
        "auto"
            | "break"
            | "case"
            | "char"
            | "const"
            | "continue"
            | "default"
            | "do"
            | "double"
            | "else"
            | "enum"
            | "extern"
            | "float"
            | "for"
            | "goto"
            | "if"
            | "inline"
            | "int"
            | "long"
            | "register"
            | "restrict"
            | "return"
            | "short"
            | "signed"
            | "sizeof"
            | "static"
            | "struct"
            | "switch"
            | "typedef"
            | "union"
            | "unsigned"
            | "void"
            | "volatile"
            | "while"
            | "_Bool"
            | "_Complex"
            | "_Noreturn"
            | "_Thread_local"
            | "__inline"
            | "__inline__"
            | "__volatile__"
            | "__const"
            | "__const__"
            | "__restrict"
            | "__restrict__"
            | "__signed__"
            | "__extension__"
            | "_Bool_"
            | "__int128"
            | "bool"
    )
}

/// Identifiers followed by a parenthesised group that is not a parameter list.
fn is_group_keyword(t: &str) -> bool {
    matches!(
        t,
        "__attribute__"
            | "__attribute"
            | "asm"
            | "__asm__"
            | "__asm"
            | "typeof"
            | "__typeof__"
            | "__typeof"
            | "_Alignas"
            | "__alignof__"
            | "_Alignof"
            | "__declspec"
    )
}

/// Attribute words that make gcc emit a function or object nobody references.
fn forces_emission(t: &str) -> bool {
    matches!(
        t,
        "used"
            | "__used__"
            | "constructor"
            | "__constructor__"
            | "destructor"
            | "__destructor__"
            | "externally_visible"
            | "__externally_visible__"
            | "alias"
            | "__alias__"
            | "ifunc"
            | "__ifunc__"
            | "weakref"
            | "__weakref__"
    )
}

fn is_ident(t: &str) -> bool {
    t.as_bytes()
        .first()
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_' || *c == b'$')
}

/// One top-level item: `tokens[start..end]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    start: usize,
    end: usize,
    root: bool,
    /// The names other items reach it by.
    defines: Vec<usize>,
}

/// The index of the token closing the group opened at `open` (or the last token).
fn close_of(toks: &[&str], open: usize) -> usize {
    let mut depth = 0usize;
    for (k, t) in toks.iter().enumerate().skip(open) {
        match *t {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    toks.len().saturating_sub(1)
}

/// Splits `toks` into top-level items.
fn split_items(toks: &[&str]) -> Vec<(usize, usize, bool)> {
    // (start, end, is_function_definition)
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        if t.starts_with('#') {
            if start < i {
                out.push((start, i, false));
            }
            out.push((i, i + 1, false));
            i += 1;
            start = i;
            continue;
        }
        match t {
            ";" => {
                out.push((start, i + 1, false));
                i += 1;
                start = i;
            }
            "(" | "[" => i = close_of(toks, i) + 1,
            "{" => {
                let close = close_of(toks, i);
                if function_name(&toks[start..i]).is_some() {
                    out.push((start, close + 1, true));
                    start = close + 1;
                }
                i = close + 1;
            }
            _ => i += 1,
        }
    }
    if start < toks.len() {
        out.push((start, toks.len(), false));
    }
    out
}

/// When `head` (an item's tokens before a `{`) is a function definition's head, the index of
/// its name: the identifier before the last parenthesised group, with nothing after that group.
fn function_name(head: &[&str]) -> Option<usize> {
    if head.last() != Some(&")") {
        return None;
    }
    // Find the group's opening parenthesis.
    let mut depth = 0usize;
    let mut open = None;
    for k in (0..head.len()).rev() {
        match head[k] {
            ")" | "]" | "}" => depth += 1,
            "(" | "[" | "{" => {
                depth -= 1;
                if depth == 0 {
                    open = Some(k);
                    break;
                }
            }
            _ => {}
        }
    }
    let name = open?.checked_sub(1)?;
    let n = head[name];
    (is_ident(n) && !is_keyword(n) && !is_group_keyword(n)).then_some(name)
}

/// The depth-0 tokens of an item with attribute, asm and typeof groups removed.
fn surface<'a>(toks: &[&'a str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        if is_group_keyword(t) && toks.get(i + 1) == Some(&"(") {
            i = close_of(toks, i + 1) + 1;
            continue;
        }
        match t {
            "(" | "[" | "{" => {
                let close = close_of(toks, i);
                out.push(t);
                out.push(if t == "(" { "()" } else { "{}" });
                i = close + 1;
            }
            _ => {
                out.push(t);
                i += 1;
            }
        }
    }
    out
}

/// Whether a declaration (tokens up to and with its `;`) emits nothing by itself.
fn declaration_is_silent(toks: &[&str]) -> bool {
    let s = surface(toks);
    if s.first() == Some(&"_Static_assert") || s.first() == Some(&"static_assert") {
        return false;
    }
    let has = |w: &str| s.contains(&w);
    if has("typedef") {
        return true;
    }
    if has("=") || has(",") {
        return false;
    }
    if has("extern") {
        return true;
    }
    // struct/union/enum [tag] [{...}] ;
    let words: Vec<&str> = s
        .iter()
        .copied()
        .filter(|w| *w != "__extension__")
        .collect();
    if let Some(&first) = words.first() {
        if matches!(first, "struct" | "union" | "enum") {
            let rest = &words[1..];
            let tag_only = matches!(
                rest,
                [";"] | [_, ";"] | ["{", "{}", ";"] | [_, "{", "{}", ";"]
            );
            if tag_only {
                return true;
            }
        }
    }
    // A prototype: ... name ( params ) ;  (a function pointer variable, `int (*fp)(void);`,
    // has a group, not a name, before its parameter list).
    if let [.., name, "(", "()", ";"] = s.as_slice() {
        return is_ident(name) && !is_keyword(name);
    }
    false
}

/// The names an item defines: a function definition its name; any other item every name in
/// it (its declarators, tags, enumerators and members: generous, since more names only make
/// more items used).
fn definednames<'a>(toks: &[&'a str], function: Option<usize>) -> Vec<&'a str> {
    match function {
        Some(n) => vec![toks[n]],
        None => toks
            .iter()
            .copied()
            .filter(|t| is_ident(t) && !is_keyword(t))
            .collect(),
    }
}

struct Unit<'a> {
    items: Vec<Item>,
    /// For each item: the depth at which the used set reached it (`None`: unused).
    reached: Vec<Option<usize>>,
    names: Vec<&'a str>,
}

fn analyse<'a>(toks: &[&'a str]) -> Unit<'a> {
    let mut names: Vec<&'a str> = Vec::new();
    let mut name_ids: HashMap<&'a str, usize> = HashMap::new();
    let mut id_of = |n: &'a str, names: &mut Vec<&'a str>| -> usize {
        *name_ids.entry(n).or_insert_with(|| {
            names.push(n);
            names.len() - 1
        })
    };
    let mut items = Vec::new();
    for (start, end, is_fn) in split_items(toks) {
        let body = &toks[start..end];
        let function = if is_fn {
            let brace = body.iter().position(|t| *t == "{").unwrap_or(body.len());
            function_name(&body[..brace])
        } else {
            None
        };
        let forced = body.iter().any(|t| forces_emission(t));
        let root = if body[0].starts_with('#') {
            true
        } else if let Some(n) = function {
            let spec = &body[..n];
            let is_static = spec.contains(&"static");
            let is_inline = spec
                .iter()
                .any(|t| matches!(*t, "inline" | "__inline" | "__inline__"));
            !(is_static && is_inline) || forced
        } else if is_fn {
            true
        } else {
            forced || !declaration_is_silent(body)
        };
        let defines = definednames(body, function)
            .into_iter()
            .map(|n| id_of(n, &mut names))
            .collect();
        items.push(Item {
            start,
            end,
            root,
            defines,
        });
    }
    // name -> items defining it
    let mut definers: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    for (k, it) in items.iter().enumerate() {
        for &n in &it.defines {
            definers[n].push(k);
        }
    }
    let mut reached: Vec<Option<usize>> = items.iter().map(|i| i.root.then_some(0)).collect();
    let mut name_seen = vec![false; names.len()];
    let mut frontier: Vec<usize> = (0..items.len()).filter(|&k| items[k].root).collect();
    let mut depth = 0;
    while !frontier.is_empty() {
        depth += 1;
        let mut next = Vec::new();
        for k in frontier {
            for t in &toks[items[k].start..items[k].end] {
                let Some(&n) = name_ids.get(t) else {
                    continue;
                };
                if std::mem::replace(&mut name_seen[n], true) {
                    continue;
                }
                for &d in &definers[n] {
                    if reached[d].is_none() {
                        reached[d] = Some(depth);
                        next.push(d);
                    }
                }
            }
        }
        frontier = next;
    }
    Unit {
        items,
        reached,
        names,
    }
}

/// The items a changed range `[s, e)` touches: those it overlaps, or for an empty range (tokens
/// inserted on the other side before token `s`), the item token `s` belongs to: what is
/// inserted before an item's first token becomes part of that item.
fn touched(items: &[Item], s: usize, e: usize) -> Vec<usize> {
    let first = items.partition_point(|it| it.end <= s);
    let mut out = Vec::new();
    for (k, it) in items.iter().enumerate().skip(first) {
        if s == e {
            if it.start <= s && s < it.end {
                out.push(k);
            }
            break;
        }
        if it.start >= e {
            break;
        }
        out.push(k);
    }
    out
}

/// How far an insertion or deletion is slid to find it a place between items.
const SLIDE: usize = 64;

/// For an insertion (or deletion) of whole items, the items inserted (or deleted), per side:
/// Myers may place an insertion a few tokens off (`} static ... {` for `static ... { }`), so it
/// is slid while the tokens allow it, until it starts and ends between items on its side and
/// falls between items on the other.
fn whole_items(
    ia: &[Item],
    ib: &[Item],
    a: &[&str],
    b: &[&str],
    ra: (usize, usize),
    rb: (usize, usize),
) -> Option<[Vec<usize>; 2]> {
    let (empty_side, full, (p, (s, e))) = match (ra.0 == ra.1, rb.0 == rb.1) {
        (true, false) => (0, (ib, b), (ra.0, rb)),
        (false, true) => (1, (ia, a), (rb.0, ra)),
        _ => return None,
    };
    let (items_full, toks) = full;
    let items_empty = if empty_side == 0 { ia } else { ib };
    let boundary =
        |items: &[Item], x: usize| x == 0 || items.iter().any(|it| it.start == x || it.end == x);
    let fits = |p: usize, s: usize, e: usize| {
        boundary(items_empty, p)
            && items_full.iter().any(|it| it.start == s)
            && items_full.iter().any(|it| it.end == e)
    };
    let found = (0..=SLIDE)
        .map(|k| k as isize)
        .flat_map(|k| [k, -k])
        .find(|&k| {
            let ok = if k >= 0 {
                let k = k as usize;
                e + k <= toks.len() && (0..k).all(|j| toks[s + j] == toks[e + j])
            } else {
                let k = (-k) as usize;
                k <= s && (1..=k).all(|j| toks[s - j] == toks[e - j])
            };
            ok && fits(
                p.wrapping_add_signed(k),
                s.wrapping_add_signed(k),
                e.wrapping_add_signed(k),
            )
        })?;
    let (s, e) = (s.wrapping_add_signed(found), e.wrapping_add_signed(found));
    let inserted: Vec<usize> = (0..items_full.len())
        .filter(|&k| items_full[k].start >= s && items_full[k].end <= e)
        .collect();
    Some(if empty_side == 0 {
        [Vec::new(), inserted]
    } else {
        [inserted, Vec::new()]
    })
}

/// How long the token diff may take before the comparison gives up (and says `Reaches`).
const DIFF_DEADLINE: Duration = Duration::from_secs(5);

/// Compares a unit preprocessed without (`orig`) and with (`patched`) the patch.
pub fn compare(orig: &str, patched: &str) -> Change {
    let a = tokens(orig);
    let b = tokens(patched);
    if a == b {
        return Change::Identical;
    }
    let deadline = Instant::now() + DIFF_DEADLINE;
    let ops =
        similar::capture_diff_slices_deadline(similar::Algorithm::Myers, &a, &b, Some(deadline));
    if Instant::now() >= deadline {
        return Change::Reaches { distance: 0 };
    }
    // A string can name a function (`alias("f")`): no name-based answer then.
    let alias_attribute = |t: &[&str]| {
        t.windows(3).any(|w| {
            matches!(w[0], "(" | ",") && matches!(w[1], "alias" | "__alias__") && w[2] == "("
        })
    };
    if alias_attribute(&a) || alias_attribute(&b) {
        return Change::Reaches { distance: 0 };
    }
    let ua = analyse(&a);
    let ub = analyse(&b);
    let mut unused = Vec::new();
    let mut distance: Option<usize> = None;
    for op in ops.iter().filter(|o| o.tag() != DiffTag::Equal) {
        let (ra, rb) = ranges(op);
        let sides = match whole_items(&ua.items, &ub.items, &a, &b, ra, rb) {
            Some(r) => r,
            None => [
                touched(&ua.items, ra.0, ra.1),
                touched(&ub.items, rb.0, rb.1),
            ],
        };
        for (u, ks) in [(&ua, &sides[0]), (&ub, &sides[1])] {
            for &k in ks {
                match u.reached[k] {
                    Some(d) => distance = Some(distance.map_or(d, |x: usize| x.min(d))),
                    None => {
                        unused.extend(u.items[k].defines.iter().map(|&n| u.names[n].to_string()))
                    }
                }
            }
        }
    }
    match distance {
        Some(d) => Change::Reaches { distance: d },
        None => {
            unused.sort();
            unused.dedup();
            Change::UnusedOnly(unused)
        }
    }
}

fn ranges(op: &DiffOp) -> ((usize, usize), (usize, usize)) {
    let o = op.old_range();
    let n = op.new_range();
    ((o.start, o.end), (n.start, n.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "# 1 \"include/linux/x.h\"\n\
        typedef unsigned int u32;\n\
        struct vlan { u32 tci; int proto; };\n\
        extern int vlan_count;\n\
        void vlan_put(struct vlan *v);\n\
        static inline __attribute__((__always_inline__)) u32 vlan_tci(const struct vlan *v)\n\
        {\n\treturn v->tci & 0xfff;\n}\n\
        static inline int vlan_proto(const struct vlan *v)\n{\n\treturn v->proto;\n}\n\
        static inline int vlan_wrap(const struct vlan *v)\n{\n\treturn vlan_proto(v) + 1;\n}\n";

    fn unit(header: &str, body: &str) -> String {
        format!("{header}# 1 \"drivers/net/a.c\"\n{body}")
    }

    #[test]
    fn tokens_drop_line_markers_and_keep_maximal_punctuators() {
        assert_eq!(
            tokens("# 1 \"a.h\" 1\nint x = a+++b; /* */\n#pragma GCC diagnostic push\n#line 7\ns = \"a;b\" 'c' 1.5e+3;"),
            vec![
                "int", "x", "=", "a", "++", "+", "b", ";", "/", "*", "*", "/",
                "#pragma GCC diagnostic push", "s", "=", "\"a;b\"", "'c'", "1.5e+3", ";"
            ]
        );
        assert_ne!(tokens("a + +b"), tokens("a ++b"));
        assert_eq!(tokens("a  +\n b"), tokens("a+b"));
    }

    #[test]
    fn a_change_in_an_inline_the_unit_never_calls_is_unused() {
        let body = "int use(struct vlan *v) { return vlan_tci(v); }\n";
        let patched = HEADER.replace("return v->proto;", "return v->proto ^ 1;");
        assert_eq!(
            compare(&unit(HEADER, body), &unit(&patched, body)),
            Change::UnusedOnly(vec!["vlan_proto".into()])
        );
        // Called only from another inline nobody calls: still unused.
        let body2 = "int use(struct vlan *v) { return 0; }\n";
        assert!(matches!(
            compare(&unit(HEADER, body2), &unit(&patched, body2)),
            Change::UnusedOnly(_)
        ));
    }

    #[test]
    fn a_change_in_an_inline_the_unit_calls_reaches_it() {
        let patched = HEADER.replace("return v->proto;", "return v->proto ^ 1;");
        let direct = "int use(struct vlan *v) { return vlan_proto(v); }\n";
        assert_eq!(
            compare(&unit(HEADER, direct), &unit(&patched, direct)),
            Change::Reaches { distance: 1 }
        );
        let through = "int use(struct vlan *v) { return vlan_wrap(v); }\n";
        assert_eq!(
            compare(&unit(HEADER, through), &unit(&patched, through)),
            Change::Reaches { distance: 2 }
        );
        // Taking its address in data counts too.
        let data = "void *ops[] = { vlan_proto };\n";
        assert_eq!(
            compare(&unit(HEADER, data), &unit(&patched, data)),
            Change::Reaches { distance: 1 }
        );
    }

    #[test]
    fn types_declarations_and_roots() {
        let body = "int use(struct vlan *v) { return vlan_tci(v); }\n";
        // The struct is used by the unit's own code.
        let patched = HEADER.replace("int proto; }", "int proto; int pad; }");
        assert_eq!(
            compare(&unit(HEADER, body), &unit(&patched, body)),
            Change::Reaches { distance: 1 }
        );
        // A new prototype and an extern nobody uses.
        let patched = HEADER.replace(
            "extern int vlan_count;",
            "extern int vlan_count;\nextern long vlan_other;\nvoid vlan_get(void);",
        );
        assert!(matches!(
            compare(&unit(HEADER, body), &unit(&patched, body)),
            Change::UnusedOnly(_)
        ));
        // A new variable definition emits data: a root.
        let patched = HEADER.replace("extern int vlan_count;", "int vlan_count;");
        assert_eq!(
            compare(&unit(HEADER, body), &unit(&patched, body)),
            Change::Reaches { distance: 0 }
        );
        // A function pointer variable is not a prototype.
        let patched = HEADER.replace(
            "void vlan_put(struct vlan *v);",
            "u32 (*vlan_put)(struct vlan *v);",
        );
        assert_eq!(
            compare(&unit(HEADER, body), &unit(&patched, body)),
            Change::Reaches { distance: 0 }
        );
        // A pragma is a root.
        let patched = format!("#pragma pack(1)\n{HEADER}");
        assert_eq!(
            compare(&unit(HEADER, body), &unit(&patched, body)),
            Change::Reaches { distance: 0 }
        );
    }

    #[test]
    fn inlines_that_gcc_emits_anyway_are_roots() {
        let body = "int use(void) { return 0; }\n";
        let h = "static inline __attribute__((__used__)) int keep(void) { return 1; }\n";
        let p = h.replace("return 1", "return 2");
        assert_eq!(
            compare(&unit(h, body), &unit(&p, body)),
            Change::Reaches { distance: 0 }
        );
        // Not inline: a static function is a root here.
        let h = "static int helper(void) { return 1; }\n";
        let p = h.replace("return 1", "return 2");
        assert_eq!(
            compare(&unit(h, body), &unit(&p, body)),
            Change::Reaches { distance: 0 }
        );
    }

    #[test]
    fn identical_tokens_are_identical_whatever_the_line_markers() {
        let a = unit(HEADER, "int z;\n");
        let b = a.replace("# 1 \"drivers/net/a.c\"", "# 40 \"drivers/net/a.c\"");
        assert_eq!(compare(&a, &b), Change::Identical);
    }

    #[test]
    fn a_new_unused_inline_is_unused_and_a_changed_used_one_is_not() {
        let body = "int use(struct vlan *v) { return vlan_tci(v); }\n";
        let patched = format!("{HEADER}static inline int vlan_new(void) {{ return 3; }}\n");
        assert!(matches!(
            compare(&unit(HEADER, body), &unit(&patched, body)),
            Change::UnusedOnly(_)
        ));
        let patched = HEADER.replace("0xfff", "0x1fff");
        assert_eq!(
            compare(&unit(HEADER, body), &unit(&patched, body)),
            Change::Reaches { distance: 1 }
        );
    }
}
