//! Pure parsing of Debian kernel ABI strings, apt output and `/proc/version`.

use std::fmt;

/// The kernel lines kpatch-rs targets, by how Debian names their ABIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Line {
    /// `6.1.0-NN-<flavour>`: Debian 12's own kernel.
    V6_1,
    /// `6.12.NNN+debNN-<flavour>`: Debian 13's kernel, also in Debian 12's security suite.
    V6_12,
}

impl Line {
    /// `6.1`, `6.12`: the suffix of `linux-source-*` and `linux-kbuild-*`.
    pub fn major_minor(self) -> &'static str {
        match self {
            Line::V6_1 => "6.1",
            Line::V6_12 => "6.12",
        }
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.major_minor())
    }
}

/// The amd64 kernel flavours Debian builds with `CONFIG_LIVEPATCH`.
pub const FLAVOURS: &[&str] = &["amd64", "cloud-amd64", "rt-amd64"];

/// The parts of a Debian kernel ABI such as `6.1.0-50-amd64` or `6.12.117+deb12-cloud-amd64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abi {
    /// `6.1.0-50`, `6.12.117+deb12`: what the `-common` headers package is named after.
    pub base: String,
    /// `amd64`, `cloud-amd64` or `rt-amd64`.
    pub flavour: String,
    /// `6.1` or `6.12` (names `linux-source-6.1`).
    pub major_minor: String,
    pub line: Line,
    /// The number that orders ABIs of one line: `50` of `6.1.0-50`, `117` of `6.12.117+deb12`.
    pub serial: u32,
}

impl Abi {
    /// `linux-source-6.1`, `linux-source-6.12`.
    pub fn source_package(&self) -> String {
        format!("linux-source-{}", self.major_minor)
    }
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses a Debian amd64 kernel ABI: `6.1.0-<N>-<flavour>` or `6.12.<N>+deb<M>-<flavour>`, with a
/// flavour of [`FLAVOURS`].
pub fn parse_abi(abi: &str) -> Option<Abi> {
    let (base, flavour) = FLAVOURS
        .iter()
        .filter_map(|f| abi.strip_suffix(f)?.strip_suffix('-').map(|b| (b, *f)))
        // `cloud-amd64` before `amd64`: the longest flavour that fits
        .max_by_key(|(_, f)| f.len())?;
    let (upstream, line, serial) = if let Some((up, num)) = base.split_once('-') {
        // 6.1.0-50
        (up, Line::V6_1, num)
    } else {
        // 6.12.117+deb12
        let (up, deb) = base.split_once("+deb")?;
        if !digits(deb) {
            return None;
        }
        let patch = up.rsplit('.').next()?;
        (up, Line::V6_12, patch)
    };
    let nums: Vec<&str> = upstream.split('.').collect();
    if nums.len() != 3 || !nums.iter().all(|n| digits(n)) || !digits(serial) {
        return None;
    }
    let major_minor = format!("{}.{}", nums[0], nums[1]);
    let want = match line {
        Line::V6_1 => major_minor == "6.1" && nums[2] == "0",
        Line::V6_12 => major_minor == "6.12",
    };
    if !want {
        return None;
    }
    Some(Abi {
        base: base.to_string(),
        flavour: flavour.to_string(),
        major_minor,
        line,
        serial: serial.parse().ok()?,
    })
}

/// True when `release` (as from `uname -r`) is a Debian kernel ABI.
pub fn is_debian_abi(release: &str) -> bool {
    parse_abi(release.trim()).is_some()
}

/// The `Candidate:` line of `apt-cache policy <pkg>` output; `None` for `(none)` or absent.
pub fn candidate_from_policy(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .find(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_string)
}

/// Every version in the `Version table:` of `apt-cache policy <pkg>` output, in apt's order
/// (newest first).
pub fn versions_from_policy(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Version table:") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        // `     6.1.192-3 500` or ` *** 6.1.192-3 500`; the source lines below have 8 spaces
        // and a priority first (`500 http://...`, `100 /var/lib/dpkg/status`).
        let t = t.strip_prefix("***").map(str::trim_start).unwrap_or(t);
        let mut words = t.split_whitespace();
        let (Some(v), Some(prio)) = (words.next(), words.next()) else {
            continue;
        };
        let version_like = v.starts_with(|c: char| c.is_ascii_digit()) && !v.contains('/');
        if version_like && digits(prio) && words.next().is_none() && !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    out
}

/// Splits the output of `apt-cache policy A B ...` into `(package, block)` pairs.
pub fn split_policies(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        let head = line.trim_end();
        let starts_block =
            !line.starts_with(char::is_whitespace) && head.ends_with(':') && !head.contains(' ');
        if starts_block {
            out.push((head.trim_end_matches(':').to_string(), String::new()));
        }
        if let Some((_, block)) = out.last_mut() {
            block.push_str(line);
        }
    }
    out
}

/// The first `Depends:` field of `apt-cache show` output.
pub fn depends_from_show(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("Depends:"))
        .map(|v| v.trim().to_string())
}

/// The kernel ABI named by a `linux-image-<abi>[-unsigned]` entry of a Depends field,
/// e.g. `linux-image-6.1.0-56-amd64 (= 6.1.192-2)` gives `6.1.0-56-amd64`.
pub fn image_abi_from_depends(depends: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .map(|alt| alt.split_whitespace().next().unwrap_or(""))
        .filter_map(|name| name.strip_prefix("linux-image-"))
        .map(|abi| abi.strip_suffix("-unsigned").unwrap_or(abi))
        .find(|abi| is_debian_abi(abi))
        .map(str::to_string)
}

/// The Debian package version in `/proc/version` (`... Debian 6.1.192-2 (2025-11-16)`).
/// The compiler's own `(Debian 12.2.0-14)` earlier in the line is skipped: the kernel's
/// version is the last `Debian <version>` pair not inside parentheses.
pub fn debian_version_from_proc_version(text: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "Debian")
        .map(|w| w[1])
        .rfind(|v| v.starts_with(|c: char| c.is_ascii_digit()) && !v.ends_with(')'))
        .map(str::to_string)
}

/// Orders two Debian package versions as dpkg does (`[epoch:]upstream[-revision]`, `~` sorting
/// before everything, even the end of the string).
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if digits(e) => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((up, rev)) => (epoch, up, rev),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(c) => i32::from(c) + 256,
        }
    }
    fn part(mut a: &[u8], mut b: &[u8]) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        while !a.is_empty() || !b.is_empty() {
            // non-digit prefix, compared character by character
            loop {
                let (ca, cb) = (a.first().copied(), b.first().copied());
                let nd = |c: Option<u8>| c.is_some_and(|c| !c.is_ascii_digit());
                if !nd(ca) && !nd(cb) {
                    break;
                }
                let (oa, ob) = (
                    if nd(ca) { order(ca) } else { 0 },
                    if nd(cb) { order(cb) } else { 0 },
                );
                if oa != ob {
                    return oa.cmp(&ob);
                }
                if nd(ca) {
                    a = &a[1..];
                }
                if nd(cb) {
                    b = &b[1..];
                }
            }
            // digit run, compared as a number
            let take = |s: &mut &[u8]| {
                let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (num, rest) = s.split_at(n);
                *s = rest;
                num.iter()
                    .skip_while(|&&c| c == b'0')
                    .copied()
                    .collect::<Vec<u8>>()
            };
            let (na, nb) = (take(&mut a), take(&mut b));
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(&nb));
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| part(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| part(ra.as_bytes(), rb.as_bytes()))
}

/// A version without the suffix Debian gives a rebuild for an older release
/// (`6.12.117-1~deb12u1` and `6.12.95-1~bpo12+1` are rebuilds of `6.12.117-1` and `6.12.95-1`).
pub fn rebuilt_from(version: &str) -> &str {
    match version.rfind("~deb").or_else(|| version.rfind("~bpo")) {
        Some(i) => &version[..i],
        None => version,
    }
}

/// The upstream part of a Debian version (`6.1.192` of `6.1.192-3`).
pub fn upstream_of(version: &str) -> &str {
    let v = version.split_once(':').map_or(version, |(_, r)| r);
    v.rsplit_once('-').map_or(v, |(u, _)| u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian_abi() {
        let a = parse_abi("6.1.0-50-amd64").unwrap();
        assert_eq!(a.base, "6.1.0-50");
        assert_eq!(a.flavour, "amd64");
        assert_eq!(a.major_minor, "6.1");
        assert_eq!((a.line, a.serial), (Line::V6_1, 50));
        assert_eq!(a.source_package(), "linux-source-6.1");
    }

    #[test]
    fn parses_every_flavour_of_both_lines() {
        let cloud = parse_abi("6.1.0-57-cloud-amd64").unwrap();
        assert_eq!(
            (cloud.base.as_str(), cloud.flavour.as_str()),
            ("6.1.0-57", "cloud-amd64")
        );
        let rt = parse_abi("6.1.0-47-rt-amd64").unwrap();
        assert_eq!(
            (rt.base.as_str(), rt.flavour.as_str(), rt.serial),
            ("6.1.0-47", "rt-amd64", 47)
        );
        let new = parse_abi("6.12.117+deb12-amd64").unwrap();
        assert_eq!(
            (
                new.base.as_str(),
                new.flavour.as_str(),
                new.major_minor.as_str(),
                new.line,
                new.serial
            ),
            ("6.12.117+deb12", "amd64", "6.12", Line::V6_12, 117)
        );
        assert_eq!(new.source_package(), "linux-source-6.12");
        let trixie = parse_abi("6.12.43+deb13-cloud-amd64").unwrap();
        assert_eq!(
            (trixie.base.as_str(), trixie.flavour.as_str()),
            ("6.12.43+deb13", "cloud-amd64")
        );
        assert!(is_debian_abi("6.12.111+deb12-rt-amd64\n"));
    }

    #[test]
    fn rejects_non_debian_releases() {
        for r in [
            "6.18.44-fc-v782",
            "6.1.0-amd64",
            "6.1-50-amd64",
            "6.1.0-50-arm64",
            "6.1.0-50-cloud-arm64",
            "6.1.0-x-amd64",
            "6.1.0-50-foo-amd64",
            "6.1.5-50-amd64",
            "6.12.33-1-amd64",
            "6.12.117+debx-amd64",
            "6.12.117-amd64",
            "6.13.1+deb13-amd64",
            "amd64",
            "-amd64",
            "",
        ] {
            assert!(!is_debian_abi(r), "{r}");
        }
    }

    #[test]
    fn splits_a_policy_of_several_packages() {
        let text = "linux-image-6.1.0-54-amd64:\n  Installed: (none)\n  Candidate: 6.1.190-1\n  Version table:\n     6.1.190-1 500\n        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\nlinux-image-6.1.0-55-amd64:\n  Installed: (none)\n  Candidate: 6.1.192-1\n";
        let blocks = split_policies(text);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].0, "linux-image-6.1.0-54-amd64");
        assert_eq!(
            candidate_from_policy(&blocks[0].1).as_deref(),
            Some("6.1.190-1")
        );
        assert_eq!(blocks[1].0, "linux-image-6.1.0-55-amd64");
        assert_eq!(
            candidate_from_policy(&blocks[1].1).as_deref(),
            Some("6.1.192-1")
        );
    }

    #[test]
    fn versions_from_apt_policy_table() {
        let text = "linux-source-6.1:\n  Installed: (none)\n  Candidate: 6.1.192-3\n  Version table:\n     6.1.192-3 500\n        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n     6.1.192-2 500\n        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n *** 6.1.176-1 500\n        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n        100 /var/lib/dpkg/status\n";
        assert_eq!(
            versions_from_policy(text),
            vec!["6.1.192-3", "6.1.192-2", "6.1.176-1"]
        );
        assert!(versions_from_policy("x:\n  Installed: (none)\n  Candidate: (none)\n").is_empty());
        let tilde = "linux-source-6.12:\n  Candidate: 6.12.117-1~deb12u1\n  Version table:\n     6.12.117-1~deb12u1 500\n        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n";
        assert_eq!(versions_from_policy(tilde), vec!["6.12.117-1~deb12u1"]);
    }

    #[test]
    fn candidate_from_apt_policy() {
        let text = "linux-image-amd64:\n  Installed: (none)\n  Candidate: 6.1.192-2\n  Version table:\n     6.1.192-2 500\n";
        assert_eq!(candidate_from_policy(text).as_deref(), Some("6.1.192-2"));
        assert_eq!(
            candidate_from_policy("x:\n  Installed: (none)\n  Candidate: (none)\n"),
            None
        );
        assert_eq!(candidate_from_policy(""), None);
    }

    #[test]
    fn image_abi_from_metapackage_depends() {
        let show = "Package: linux-image-amd64\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\n";
        let dep = depends_from_show(show).unwrap();
        assert_eq!(
            image_abi_from_depends(&dep).as_deref(),
            Some("6.1.0-56-amd64")
        );
        assert_eq!(
            image_abi_from_depends("kmod, linux-image-6.1.0-9-amd64-unsigned (= 6.1.27-1) | foo")
                .as_deref(),
            Some("6.1.0-9-amd64")
        );
        assert_eq!(image_abi_from_depends("kmod, linux-base (>= 4.3~)"), None);
    }

    #[test]
    fn debian_version_in_proc_version() {
        let pv = "Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2025-11-16)";
        assert_eq!(
            debian_version_from_proc_version(pv).as_deref(),
            Some("6.1.192-2")
        );
        assert_eq!(
            debian_version_from_proc_version(
                "Linux version 6.18.44-fc-v782 (builder@sandboxing) #1 SMP"
            ),
            None
        );
    }

    #[test]
    fn debian_version_order_matches_dpkg() {
        use std::cmp::Ordering::*;
        for (a, b, want) in [
            ("6.1.192-3", "6.1.192-2", Greater),
            ("6.1.176-1", "6.1.192-1", Less),
            ("6.12.117-1~deb12u1", "6.12.117-1", Less),
            ("6.12.117-1~deb12u1", "6.12.115-2~deb12u1", Greater),
            ("6.12.95-1~bpo12+1", "6.12.107-1", Less),
            ("1:1.0-1", "2.0-1", Greater),
            ("1.0~rc1-1", "1.0-1", Less),
            ("1.0-1", "1.0-1", Equal),
            ("1.0a-1", "1.0-1", Greater),
            ("1.010-1", "1.9-1", Greater),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn rebuild_suffixes_and_upstream() {
        assert_eq!(rebuilt_from("6.12.117-1~deb12u1"), "6.12.117-1");
        assert_eq!(rebuilt_from("6.12.95-1~bpo12+1"), "6.12.95-1");
        assert_eq!(rebuilt_from("6.1.192-3"), "6.1.192-3");
        assert_eq!(upstream_of("6.12.117-1~deb12u1"), "6.12.117");
        assert_eq!(upstream_of("6.1.192-3"), "6.1.192");
    }
}
