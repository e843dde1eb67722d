//! Validated newtypes for the things storage has rules about.

use std::fmt;
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A folder's row id inside one mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FolderId(pub i64);

/// An email's row id inside one mailbox (stable for the email's life).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EmailId(pub i64);

/// A thread's row id inside one mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ThreadId(pub i64);

/// A message's UID inside one folder: never 0, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Uid(pub NonZeroU32);

impl Uid {
    /// The UID as a number.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl TryFrom<u32> for Uid {
    type Error = Error;
    fn try_from(v: u32) -> Result<Self, Error> {
        NonZeroU32::new(v)
            .map(Uid)
            .ok_or_else(|| Error::Invalid("UID 0 does not exist".into()))
    }
}

impl TryFrom<i64> for Uid {
    type Error = Error;
    fn try_from(v: i64) -> Result<Self, Error> {
        u32::try_from(v)
            .map_err(|_| Error::Invalid(format!("UID {v} out of range")))?
            .try_into()
    }
}

/// A modification sequence number: the mailbox-wide change counter.
pub type ModSeq = u64;

/// A folder's special use (RFC 6154), which JMAP calls its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// The folder new mail arrives in.
    Inbox,
    /// Unsent drafts.
    Drafts,
    /// Copies of sent mail.
    Sent,
    /// Spam.
    Junk,
    /// Deleted mail on its way out.
    Trash,
    /// Kept mail.
    Archive,
}

impl Role {
    /// Every role, in the order the default folders are created.
    pub const ALL: [Role; 6] = [
        Role::Inbox,
        Role::Drafts,
        Role::Sent,
        Role::Junk,
        Role::Trash,
        Role::Archive,
    ];

    /// The stored (and JMAP) name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Inbox => "inbox",
            Role::Drafts => "drafts",
            Role::Sent => "sent",
            Role::Junk => "junk",
            Role::Trash => "trash",
            Role::Archive => "archive",
        }
    }

    /// The default folder name for the role.
    pub fn default_name(self) -> &'static str {
        match self {
            Role::Inbox => "INBOX",
            Role::Drafts => "Drafts",
            Role::Sent => "Sent",
            Role::Junk => "Junk",
            Role::Trash => "Trash",
            Role::Archive => "Archive",
        }
    }

    /// Parses a stored role name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A folder's full name; `/` separates levels ("Work/Projects").
///
/// Rules: 1 to 1,000 bytes, no control characters, no empty level, no level named "." or "..", no level
/// with leading or trailing spaces. "INBOX" in any case names the inbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FolderName(String);

impl FolderName {
    /// The hierarchy separator.
    pub const SEPARATOR: char = '/';

    /// The name as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent's name, if this is not a top-level folder.
    pub fn parent(&self) -> Option<FolderName> {
        self.0
            .rsplit_once(Self::SEPARATOR)
            .map(|(p, _)| FolderName(p.to_string()))
    }
}

impl TryFrom<&str> for FolderName {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Err(Error::Invalid(format!("folder name {s:?}: {why}")));
        if s.is_empty() || s.len() > 1000 {
            return bad("must be 1 to 1000 bytes");
        }
        if s.chars().any(char::is_control) {
            return bad("control characters are not allowed");
        }
        for level in s.split(Self::SEPARATOR) {
            if level.is_empty() {
                return bad("empty level");
            }
            if level.trim() != level {
                return bad("a level may not start or end with spaces");
            }
            if level == "." || level == ".." {
                return bad("\".\" and \"..\" are not folder names");
            }
        }
        if s.eq_ignore_ascii_case("INBOX") {
            return Ok(FolderName("INBOX".into()));
        }
        Ok(FolderName(s.to_string()))
    }
}

impl fmt::Display for FolderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A keyword (JMAP) or flag (IMAP), stored in lower case.
///
/// System flags map to JMAP keywords: `\Seen` is `$seen`, `\Answered`
/// `$answered`, `\Flagged` `$flagged`, `\Draft` `$draft`, `\Deleted`
/// `$deleted`. Rules (RFC 8621 §4.1.1): 1 to 255 ASCII characters from
/// %x21-%x7E except `( ) { ] % * " \`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Keyword(String);

impl Keyword {
    /// `$seen` (IMAP `\Seen`).
    pub fn seen() -> Keyword {
        Keyword("$seen".into())
    }
    /// `$answered` (IMAP `\Answered`).
    pub fn answered() -> Keyword {
        Keyword("$answered".into())
    }
    /// `$flagged` (IMAP `\Flagged`).
    pub fn flagged() -> Keyword {
        Keyword("$flagged".into())
    }
    /// `$draft` (IMAP `\Draft`).
    pub fn draft() -> Keyword {
        Keyword("$draft".into())
    }
    /// `$deleted` (IMAP `\Deleted`).
    pub fn deleted() -> Keyword {
        Keyword("$deleted".into())
    }
    /// `$forwarded` (RFC 5788).
    pub fn forwarded() -> Keyword {
        Keyword("$forwarded".into())
    }

    /// The keyword as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Keyword {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Error> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && !b"(){]%*\"\\".contains(&b));
        if ok {
            Ok(Keyword(s.to_ascii_lowercase()))
        } else {
            Err(Error::Invalid(format!("invalid keyword {s:?}")))
        }
    }
}

/// An alias address, `local@domain`, stored in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AliasAddress(String);

impl AliasAddress {
    /// The address as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain part.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

impl TryFrom<&str> for AliasAddress {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Error> {
        let s = s.trim().to_ascii_lowercase();
        let bad = || Error::Invalid(format!("{s:?} is not an address like name@example.com"));
        let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        let domain_ok = !domain.is_empty()
            && domain.len() <= 253
            && domain.split('.').count() >= 2
            && domain.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if local_ok && domain_ok {
            Ok(AliasAddress(s))
        } else {
            Err(bad())
        }
    }
}

impl fmt::Display for AliasAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A calendar day, `YYYY-MM-DD`, for the IMAP date keys that ignore time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Day(String);

impl Day {
    /// The day as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Day {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self, Error> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && digits(0..4)
            && digits(5..7)
            && digits(8..10)
        {
            Ok(Day(s.to_string()))
        } else {
            Err(Error::Invalid(format!(
                "{s:?} is not a day like 2024-01-31"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names() {
        assert_eq!(FolderName::try_from("inbox").unwrap().as_str(), "INBOX");
        assert_eq!(
            FolderName::try_from("Work/Projects")
                .unwrap()
                .parent()
                .unwrap()
                .as_str(),
            "Work"
        );
        for bad in [
            "", "a//b", "/a", "a/", " a", "a\u{0}b", "a/ b", "..", "a/../b", "./a",
        ] {
            assert!(FolderName::try_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keywords_and_addresses() {
        assert_eq!(Keyword::try_from("$Seen").unwrap(), Keyword::seen());
        assert!(Keyword::try_from("a b").is_err());
        assert!(Keyword::try_from("a(").is_err());
        assert!(Keyword::try_from("").is_err());
        assert_eq!(
            AliasAddress::try_from(" Hello@Example.COM ")
                .unwrap()
                .as_str(),
            "hello@example.com"
        );
        for bad in ["x", "@a.b", "a@b", "a@-b.c", "a..b@c.d", "a b@c.d"] {
            assert!(AliasAddress::try_from(bad).is_err(), "{bad:?}");
        }
        assert!(Uid::try_from(0u32).is_err());
        assert!(Day::try_from("2024-1-01").is_err());
    }
}

/// String conversions for the validated types, so that the link can carry
/// them and every value that arrives is validated again.
macro_rules! string_newtype {
    ($($t:ident),*) => {$(
        impl TryFrom<String> for $t {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                $t::try_from(s.as_str())
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
    )*};
}
string_newtype!(FolderName, Keyword, AliasAddress, Day);
