//! The search language of `POST /v1/messages/search`: a JSON tree that maps
//! one to one onto the storage engine's filter, so every condition it
//! offers (full text, words, regular expressions, headers, dates, sizes,
//! keywords, threads, attachments) is reachable over HTTP.

use cofre_storage::mailbox::{Filter, Sort, SortKey, TextField};
use cofre_storage::types::{EmailId, FolderId, Keyword};
use serde::Deserialize;
use utoipa::ToSchema;

/// Which text a text condition looks at.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// Subject.
    Subject,
    /// From names and addresses.
    From,
    /// To names and addresses.
    To,
    /// Cc names and addresses.
    Cc,
    /// Bcc names and addresses.
    Bcc,
    /// The decoded body text.
    Body,
    /// Every header field.
    Headers,
    /// Headers and body.
    Text,
}

impl From<Field> for TextField {
    fn from(f: Field) -> TextField {
        match f {
            Field::Subject => TextField::Subject,
            Field::From => TextField::From,
            Field::To => TextField::To,
            Field::Cc => TextField::Cc,
            Field::Bcc => TextField::Bcc,
            Field::Body => TextField::Body,
            Field::Headers => TextField::Headers,
            Field::Text => TextField::Text,
        }
    }
}

/// A search condition; `and`, `or` and `not` combine them to any depth.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// Every message.
    All,
    /// All of these.
    And {
        /// The conditions.
        #[schema(no_recursion)]
        of: Vec<Condition>,
    },
    /// Any of these.
    Or {
        /// The conditions.
        #[schema(no_recursion)]
        of: Vec<Condition>,
    },
    /// Not this.
    Not {
        /// The condition.
        #[schema(no_recursion)]
        of: Box<Condition>,
    },
    /// Filed in this folder.
    InFolder {
        /// Folder id.
        folder: i64,
    },
    /// Filed in some folder other than these.
    InFolderOtherThan {
        /// Folder ids.
        folders: Vec<i64>,
    },
    /// One of these messages.
    Ids {
        /// Message ids.
        ids: Vec<i64>,
    },
    /// Case-insensitive substring.
    Contains {
        /// Where.
        field: Field,
        /// What.
        value: String,
    },
    /// Every word present, in any order, accents ignored.
    Words {
        /// Where.
        field: Field,
        /// The words.
        value: String,
    },
    /// A regular expression (Rust `regex` syntax) matches.
    Regex {
        /// Where.
        field: Field,
        /// The pattern.
        pattern: String,
    },
    /// A header field contains a value (empty: the field exists).
    Header {
        /// The field name.
        name: String,
        /// The substring.
        #[serde(default)]
        value: String,
    },
    /// Arrived before (RFC 3339).
    ReceivedBefore {
        /// The instant.
        at: String,
    },
    /// Arrived at or after (RFC 3339).
    ReceivedSince {
        /// The instant.
        at: String,
    },
    /// Date header before (RFC 3339).
    SentBefore {
        /// The instant.
        at: String,
    },
    /// Date header at or after (RFC 3339).
    SentSince {
        /// The instant.
        at: String,
    },
    /// Larger than this many bytes.
    Larger {
        /// Bytes.
        size: u64,
    },
    /// Smaller than this many bytes.
    Smaller {
        /// Bytes.
        size: u64,
    },
    /// Has this keyword.
    Keyword {
        /// `$seen`, `$flagged`, … or a custom atom.
        keyword: String,
    },
    /// Every message of its thread has this keyword.
    AllInThreadHaveKeyword {
        /// The keyword.
        keyword: String,
    },
    /// Some message of its thread has this keyword.
    SomeInThreadHaveKeyword {
        /// The keyword.
        keyword: String,
    },
    /// No message of its thread has this keyword.
    NoneInThreadHaveKeyword {
        /// The keyword.
        keyword: String,
    },
    /// Has (or has not) attachments.
    HasAttachment {
        /// Whether.
        value: bool,
    },
    /// Changed at or after this modification sequence.
    ModseqAtLeast {
        /// The sequence.
        modseq: u64,
    },
}

/// Limits that keep one search from occupying a mailbox.
const MAX_DEPTH: usize = 16;
const MAX_CONDITIONS: usize = 256;

fn keyword(k: &str) -> Result<Keyword, String> {
    Keyword::try_from(k).map_err(|e| format!("keyword {k:?}: {e}"))
}

fn instant(s: &str) -> Result<i64, String> {
    cofre_storage::time::parse_iso(s).ok_or_else(|| format!("{s:?} is not an RFC 3339 date-time"))
}

impl Condition {
    /// The storage filter; the error says which condition is wrong.
    pub fn to_filter(&self) -> Result<Filter, String> {
        let mut count = 0;
        self.convert(0, &mut count)
    }

    fn convert(&self, depth: usize, count: &mut usize) -> Result<Filter, String> {
        *count += 1;
        if depth > MAX_DEPTH || *count > MAX_CONDITIONS {
            return Err(format!(
                "filters nest at most {MAX_DEPTH} deep and hold at most {MAX_CONDITIONS} conditions"
            ));
        }
        let all = |of: &[Condition], count: &mut usize| {
            of.iter()
                .map(|c| c.convert(depth + 1, count))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match self {
            Condition::All => Filter::All,
            Condition::And { of } => Filter::And(all(of, count)?),
            Condition::Or { of } => Filter::Or(all(of, count)?),
            Condition::Not { of } => Filter::Not(Box::new(of.convert(depth + 1, count)?)),
            Condition::InFolder { folder } => Filter::InFolder(FolderId(*folder)),
            Condition::InFolderOtherThan { folders } => {
                Filter::InFolderOtherThan(folders.iter().map(|f| FolderId(*f)).collect())
            }
            Condition::Ids { ids } => Filter::Emails(ids.iter().map(|i| EmailId(*i)).collect()),
            Condition::Contains { field, value } => {
                Filter::Contains((*field).into(), value.clone())
            }
            Condition::Words { field, value } => Filter::Words((*field).into(), value.clone()),
            Condition::Regex { field, pattern } => {
                // Checked here so a bad pattern is a 400, with the reason.
                regex::RegexBuilder::new(pattern)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("regex: {e}"))?;
                Filter::Regex((*field).into(), pattern.clone())
            }
            Condition::Header { name, value } => Filter::Header(name.clone(), value.clone()),
            Condition::ReceivedBefore { at } => Filter::ReceivedBefore(instant(at)?),
            Condition::ReceivedSince { at } => Filter::ReceivedSince(instant(at)?),
            Condition::SentBefore { at } => Filter::SentBefore(instant(at)?),
            Condition::SentSince { at } => Filter::SentSince(instant(at)?),
            Condition::Larger { size } => Filter::Larger(*size),
            Condition::Smaller { size } => Filter::Smaller(*size),
            Condition::Keyword { keyword: k } => Filter::Keyword(keyword(k)?),
            Condition::AllInThreadHaveKeyword { keyword: k } => {
                Filter::AllInThreadHaveKeyword(keyword(k)?)
            }
            Condition::SomeInThreadHaveKeyword { keyword: k } => {
                Filter::SomeInThreadHaveKeyword(keyword(k)?)
            }
            Condition::NoneInThreadHaveKeyword { keyword: k } => {
                Filter::NoneInThreadHaveKeyword(keyword(k)?)
            }
            Condition::HasAttachment { value } => Filter::HasAttachment(*value),
            Condition::ModseqAtLeast { modseq } => Filter::ModSeqAtLeast(*modseq),
        })
    }
}

/// Sort orders: a key, `-` in front for descending. `received_at`,
/// `sent_at`, `size`, `from`, `to`, `subject`, `uid` (in a folder).
pub fn sort(spec: &str) -> Result<Vec<Sort>, String> {
    spec.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (ascending, name) = match s.strip_prefix('-') {
                Some(rest) => (false, rest),
                None => (true, s),
            };
            let key = match name {
                "received_at" => SortKey::ReceivedAt,
                "sent_at" => SortKey::SentAt,
                "size" => SortKey::Size,
                "from" => SortKey::From,
                "to" => SortKey::To,
                "subject" => SortKey::Subject,
                "uid" => SortKey::Uid,
                other => return Err(format!("cannot sort by {other:?}")),
            };
            Ok(Sort { key, ascending })
        })
        .collect()
}
