//! Pure parsing of Debian kernel ABI strings, apt output and `/proc/version`.

/// The parts of a Debian kernel ABI such as `6.1.0-50-amd64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abi {
    /// `6.1.0-50`
    pub base: String,
    /// `amd64`
    pub flavour: String,
    /// `6.1` (names `linux-kbuild-6.1` and `linux-source-6.1`)
    pub major_minor: String,
}

/// Parses an ABI of the form `^\d+\.\d+\.\d+-\d+-amd64$`.
pub fn parse_abi(abi: &str) -> Option<Abi> {
    let (base, flavour) = abi.rsplit_once('-')?;
    if flavour != "amd64" {
        return None;
    }
    let (upstream, abinum) = base.split_once('-')?;
    let nums: Vec<&str> = upstream.split('.').collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if nums.len() != 3 || !nums.iter().all(|n| digits(n)) || !digits(abinum) {
        return None;
    }
    Some(Abi {
        base: base.to_string(),
        flavour: flavour.to_string(),
        major_minor: format!("{}.{}", nums[0], nums[1]),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian_abi() {
        let a = parse_abi("6.1.0-50-amd64").unwrap();
        assert_eq!(a.base, "6.1.0-50");
        assert_eq!(a.flavour, "amd64");
        assert_eq!(a.major_minor, "6.1");
        assert!(is_debian_abi("6.12.33-1-amd64\n"));
    }

    #[test]
    fn rejects_non_debian_releases() {
        for r in [
            "6.18.44-fc-v782",
            "6.1.0-amd64",
            "6.1-50-amd64",
            "6.1.0-50-arm64",
            "6.1.0-x-amd64",
            "6.1.0-50-cloud-amd64",
            "",
        ] {
            assert!(!is_debian_abi(r), "{r}");
        }
    }

    #[test]
    fn candidate_from_apt_policy() {
        let text = "linux-image-amd64:\n  Installed: (none)\n  Candidate: 6.1.192-2\n  Version table:\n     6.1.192-2 500\n";
        assert_eq!(candidate_from_policy(text).as_deref(), Some("6.1.192-2"));
        assert_eq!(candidate_from_policy("x:\n  Installed: (none)\n  Candidate: (none)\n"), None);
        assert_eq!(candidate_from_policy(""), None);
    }

    #[test]
    fn image_abi_from_metapackage_depends() {
        let show = "Package: linux-image-amd64\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\n";
        let dep = depends_from_show(show).unwrap();
        assert_eq!(image_abi_from_depends(&dep).as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(
            image_abi_from_depends("kmod, linux-image-6.1.0-9-amd64-unsigned (= 6.1.27-1) | foo").as_deref(),
            Some("6.1.0-9-amd64")
        );
        assert_eq!(image_abi_from_depends("kmod, linux-base (>= 4.3~)"), None);
    }

    #[test]
    fn debian_version_in_proc_version() {
        let pv = "Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2025-11-16)";
        assert_eq!(debian_version_from_proc_version(pv).as_deref(), Some("6.1.192-2"));
        assert_eq!(debian_version_from_proc_version("Linux version 6.18.44-fc-v782 (builder@sandboxing) #1 SMP"), None);
    }
}
