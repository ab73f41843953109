//! The control file of a binary package (`DEBIAN/control`, deb-control(5)): fields in order,
//! package names and versions as Debian policy allows them, and the description's layout.

use crate::DebError;

/// A binary package's control fields, in the order they are written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    fields: Vec<(String, String)>,
}

impl Control {
    /// A control file with the mandatory fields; `Package` and `Version` are checked.
    pub fn new(
        package: &str,
        version: &str,
        architecture: &str,
        maintainer: &str,
    ) -> Result<Self, DebError> {
        check_name(package)?;
        check_version(version)?;
        let mut c = Control::default();
        c.set("Package", package)?;
        c.set("Version", version)?;
        c.set("Architecture", architecture)?;
        c.set("Maintainer", maintainer)?;
        Ok(c)
    }

    /// Sets a one-line field (replacing an earlier value).
    pub fn set(&mut self, field: &str, value: &str) -> Result<&mut Self, DebError> {
        let bad = |reason| DebError::BadField {
            field: field.to_string(),
            reason,
        };
        if field.is_empty()
            || field.starts_with(['#', '-'])
            || !field.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        {
            return Err(bad("not a field name"));
        }
        if value.contains('\n') {
            return Err(bad("a one-line field has a newline"));
        }
        if value.trim().is_empty() {
            return Err(bad("empty"));
        }
        match self
            .fields
            .iter_mut()
            .find(|(f, _)| f.eq_ignore_ascii_case(field))
        {
            Some((_, v)) => *v = value.trim().to_string(),
            None => self
                .fields
                .push((field.to_string(), value.trim().to_string())),
        }
        Ok(self)
    }

    /// Sets `Description`: the synopsis, then the long description's lines (an empty line
    /// becomes ` .`).
    pub fn set_description(
        &mut self,
        synopsis: &str,
        long: &[String],
    ) -> Result<&mut Self, DebError> {
        let mut value = one_line(synopsis);
        for line in long {
            let line = one_line(line);
            value.push_str("\n ");
            value.push_str(if line.is_empty() { "." } else { &line });
        }
        self.fields.retain(|(f, _)| f != "Description");
        self.fields.push(("Description".into(), value));
        Ok(self)
    }

    /// The value of `field`.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| f.eq_ignore_ascii_case(field))
            .map(|(_, v)| v.as_str())
    }

    /// The `DEBIAN/control` text.
    pub fn render(&self) -> String {
        self.fields
            .iter()
            .map(|(f, v)| format!("{f}: {v}\n"))
            .collect()
    }
}

/// `text` on one line: control characters become spaces, runs of spaces one.
pub fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A package name as policy §5.6.1 allows: lower-case letters, digits, `+`, `-`, `.`; at least
/// two characters; starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), DebError> {
    let bad = |reason| DebError::BadName {
        name: name.to_string(),
        reason,
    };
    if name.len() < 2 {
        return Err(bad("shorter than two characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(bad("must start with a lower-case letter or a digit"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
    {
        return Err(bad(
            "only lower-case letters, digits, `+`, `-` and `.` are allowed",
        ));
    }
    Ok(())
}

/// `text` made into a part of a package name: lower case, `_` and other characters become `-`.
pub fn name_part(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '+' | '.' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect()
}

/// A version as policy §5.6.12 allows (`[epoch:]upstream[-revision]`, the upstream part
/// starting with a digit).
pub fn check_version(version: &str) -> Result<(), DebError> {
    let bad = |reason| DebError::BadVersion {
        version: version.to_string(),
        reason,
    };
    let rest = match version.split_once(':') {
        Some((epoch, rest)) if !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_digit()) => {
            rest
        }
        Some(_) => return Err(bad("the epoch before `:` must be a number")),
        None => version,
    };
    if !rest.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad("must start with a digit"));
    }
    if !rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".+~-:".contains(&b))
    {
        return Err(bad("only letters, digits and `.+~-:` are allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions() {
        assert!(check_name("livepatch-fix-6.1.0-57-amd64").is_ok());
        for bad in ["a", "-x", "Upper", "a_b", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(name_part("Fix_CVE 1"), "fix-cve-1");
        for good in ["1", "2.0-1", "1:2~rc1+b1"] {
            assert!(check_version(good).is_ok(), "{good}");
        }
        for bad in ["", "v2", "x:1", "1 2", "1_2"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renders_fields_and_the_description() {
        let mut c = Control::new("pkg-x", "2", "amd64", "A <a@example.org>").unwrap();
        c.set("Depends", "kpatch-rs (>= 0.1.0)").unwrap();
        c.set_description(
            "a patch",
            &["first\tline".into(), String::new(), "  second  ".into()],
        )
        .unwrap();
        c.set("Depends", "other").unwrap();
        assert_eq!(
            c.render(),
            "Package: pkg-x\nVersion: 2\nArchitecture: amd64\nMaintainer: A <a@example.org>\n\
             Depends: other\nDescription: a patch\n first line\n .\n second\n"
        );
        assert!(c.set("Bad:Name", "x").is_err());
        assert!(c.set("X", "two\nlines").is_err());
        assert!(c.set("X", " ").is_err());
        assert_eq!(c.get("depends"), Some("other"));
    }
}
