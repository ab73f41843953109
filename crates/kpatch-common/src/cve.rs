//! CVE numbers (`CVE-YYYY-NNNN`, four or more digits after the year) as a patch's headers and
//! `build --cve` give them, and as `.modinfo` and package metadata record them.

/// Whether `s` is exactly one CVE number, in upper case.
pub fn is_cve(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("CVE-") else {
        return false;
    };
    let Some((year, seq)) = rest.split_once('-') else {
        return false;
    };
    year.len() == 4
        && year.bytes().all(|b| b.is_ascii_digit())
        && seq.len() >= 4
        && seq.bytes().all(|b| b.is_ascii_digit())
}

/// Every CVE number in `text` (case-insensitive, written in upper case), sorted, each once. A
/// number must stand alone: `XCVE-2024-1234` or `CVE-2024-12345x` are not taken.
pub fn find_cves(text: &str) -> Vec<String> {
    let upper = text.to_ascii_uppercase();
    let bytes = upper.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = upper[from..].find("CVE-").map(|i| i + from) {
        from = at + 4;
        if at > 0 && bytes[at - 1].is_ascii_alphanumeric() {
            continue;
        }
        let end = upper[at + 4..]
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .map_or(upper.len(), |i| i + at + 4);
        // A number followed by a letter (`CVE-2024-1234a`) is not one.
        if bytes.get(end).is_some_and(|b| b.is_ascii_alphabetic()) {
            continue;
        }
        let candidate = upper[at..end].trim_end_matches('-');
        if is_cve(candidate) {
            out.push(candidate.to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cve_numbers() {
        assert!(is_cve("CVE-2024-1234") && is_cve("CVE-2099-123456"));
        for bad in [
            "CVE-24-1234",
            "CVE-2024-123",
            "cve-2024-1234",
            "CVE-2024-12a4",
            "CVE2024",
        ] {
            assert!(!is_cve(bad), "{bad}");
        }
    }

    #[test]
    fn finds_cves_in_text() {
        let text = "Fixes CVE-2099-1002 and cve-2099-1001.\n(CVE-2099-1002 again; XCVE-2099-9999, \
                    CVE-2099-12345x, CVE-2099-77) CVE-2099-3333-";
        assert_eq!(
            find_cves(text),
            ["CVE-2099-1001", "CVE-2099-1002", "CVE-2099-3333"]
        );
        assert!(find_cves("no numbers here").is_empty());
    }
}
