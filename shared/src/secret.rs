//! A string that must never reach a log line or an API response.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Holds a secret value (API key, admin key, account token). `Debug` and `Display`
/// print a redaction marker, so a stray `?secret` in a log statement leaks nothing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plain value, for the few places that must send it somewhere (a cookie header,
    /// a digest). Call sites are easy to audit by searching for `expose`.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `abcd…wxyz`: enough to tell two tokens apart in an admin table, useless to an attacker.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// Masks all but a short head and tail of a secret string.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 12 {
        return "*".repeat(chars.len().min(8));
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(empty)"
        } else {
            "Secret(***)"
        })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl Serialize for Secret {
    /// Serializing a secret writes the redaction marker; code that really needs the value
    /// (the store, the config writer) uses `expose` explicitly.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_display_and_serialize_redact() {
        let s = Secret::new("eyJhbGciOiJIUzI1NiJ9.secret-part");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.masked(), "eyJhbG…part");
        assert_eq!(s.expose(), "eyJhbGciOiJIUzI1NiJ9.secret-part");
    }
}
