//! Search: one filter language that covers every IMAP SEARCH key (RFC 9051
//! §6.4.4) and every JMAP Email FilterCondition (RFC 8621 §4.4.1), compiled
//! to one SQL statement.
//!
//! Substring conditions (IMAP semantics: case-insensitive substring) use the
//! trigram index; word conditions (JMAP text search) use the word index;
//! regular expressions run the Rust `regex` crate over the stored text.

use rusqlite::OptionalExtension;
use rusqlite::types::Value;
use serde::{Deserialize, Serialize};

use super::{Mailbox, id_list};
use crate::error::{Error, Result};
use crate::time;
use crate::types::{Day, EmailId, FolderId, Keyword, ModSeq, ThreadId, Uid};

/// Which text of a message a text condition looks at.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    /// The Subject.
    Subject,
    /// The From addresses and names.
    From,
    /// The To addresses and names.
    To,
    /// The Cc addresses and names.
    Cc,
    /// The Bcc addresses and names.
    Bcc,
    /// The decoded body text.
    Body,
    /// Every header field, decoded.
    Headers,
    /// Headers and body (IMAP TEXT, JMAP text).
    Text,
}

impl TextField {
    fn columns(self) -> &'static [&'static str] {
        match self {
            TextField::Subject => &["subject"],
            TextField::From => &["from_text"],
            TextField::To => &["to_text"],
            TextField::Cc => &["cc_text"],
            TextField::Bcc => &["bcc_text"],
            TextField::Body => &["body"],
            TextField::Headers => &["headers"],
            TextField::Text => &["headers", "body"],
        }
    }

    fn word_columns(self) -> &'static [&'static str] {
        match self {
            TextField::Headers => &[],
            TextField::Text => &[
                "subject",
                "from_text",
                "to_text",
                "cc_text",
                "bcc_text",
                "body",
            ],
            other => other.columns(),
        }
    }
}

/// A search condition. Combine with `And`, `Or`, `Not` to any depth.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Every message.
    All,
    /// All of these.
    And(Vec<Filter>),
    /// Any of these.
    Or(Vec<Filter>),
    /// Not this.
    Not(Box<Filter>),
    /// In this folder (JMAP inMailbox).
    InFolder(FolderId),
    /// In some folder other than these (JMAP inMailboxOtherThan).
    InFolderOtherThan(Vec<FolderId>),
    /// UIDs in these inclusive ranges; needs a query folder (IMAP UID set).
    Uids(Vec<(u32, u32)>),
    /// These emails.
    Emails(Vec<EmailId>),
    /// Emails of these threads.
    Threads(Vec<ThreadId>),
    /// Received strictly before (Unix seconds; JMAP before, IMAP BEFORE).
    ReceivedBefore(i64),
    /// Received at or after (JMAP after, IMAP SINCE).
    ReceivedSince(i64),
    /// Date header strictly before (UTC).
    SentBefore(i64),
    /// Date header at or after (UTC).
    SentSince(i64),
    /// Date header's own calendar day is before (IMAP SENTBEFORE).
    SentDayBefore(Day),
    /// Date header's own calendar day is (IMAP SENTON).
    SentDayOn(Day),
    /// Date header's own calendar day is on or after (IMAP SENTSINCE).
    SentDaySince(Day),
    /// Size strictly larger (IMAP LARGER; JMAP minSize is `Larger(n - 1)`).
    Larger(u64),
    /// Size strictly smaller (IMAP SMALLER, JMAP maxSize).
    Smaller(u64),
    /// Has this keyword (IMAP KEYWORD/SEEN/…, JMAP hasKeyword).
    Keyword(Keyword),
    /// Every email of its thread has this keyword.
    AllInThreadHaveKeyword(Keyword),
    /// Some email of its thread has this keyword.
    SomeInThreadHaveKeyword(Keyword),
    /// No email of its thread has this keyword.
    NoneInThreadHaveKeyword(Keyword),
    /// Has (or has not) attachments.
    HasAttachment(bool),
    /// Case-insensitive substring (IMAP SUBJECT/FROM/BODY/TEXT/…).
    Contains(TextField, String),
    /// Every word present, in any order (JMAP text/subject/body/…).
    Words(TextField, String),
    /// A header field whose value contains a substring; an empty string
    /// asks only that the field exists (IMAP HEADER, JMAP header).
    Header(String, String),
    /// A regular expression (Rust `regex` syntax) matches the text.
    Regex(TextField, String),
    /// MODSEQ at least this (IMAP MODSEQ).
    ModSeqAtLeast(ModSeq),
}

/// What to sort by.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum SortKey {
    /// Internal date.
    ReceivedAt,
    /// Date header.
    SentAt,
    /// Size in bytes.
    Size,
    /// First From name or address.
    From,
    /// First To name or address.
    To,
    /// Base subject.
    Subject,
    /// UID (needs a query folder).
    Uid,
    /// Whether the email has this keyword (with it sorts after, ascending).
    Keyword(Keyword),
}

/// One sort criterion.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    /// The key.
    pub key: SortKey,
    /// Ascending if true.
    pub ascending: bool,
}

/// A complete search request.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Restrict to one folder; hits then carry UIDs.
    pub folder: Option<FolderId>,
    /// The condition.
    pub filter: Filter,
    /// Sort order; ties go by UID (with a folder) or by email id.
    pub sort: Vec<Sort>,
    /// Keep only the first email of each thread (JMAP collapseThreads).
    pub collapse_threads: bool,
    /// Skip this many hits.
    pub position: usize,
    /// Return at most this many hits.
    pub limit: Option<usize>,
}

impl Query {
    /// Every message of a folder matching `filter`, in UID order.
    pub fn in_folder(folder: FolderId, filter: Filter) -> Query {
        Query {
            folder: Some(folder),
            filter,
            sort: Vec::new(),
            collapse_threads: false,
            position: 0,
            limit: None,
        }
    }

    /// Every email of the mailbox matching `filter`, oldest id first.
    pub fn everywhere(filter: Filter) -> Query {
        Query {
            folder: None,
            ..Query::in_folder(FolderId(0), filter)
        }
    }
}

/// One search result.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchHit {
    /// The email.
    pub email_id: EmailId,
    /// Its UID in the query folder, if the query had one.
    pub uid: Option<Uid>,
}

/// The words of a query text, cut where the word index cuts them.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// Quotes a string as an FTS5 phrase.
fn phrase(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The case-folded characters of a text, as search compares them.
fn fold(text: &str) -> Vec<char> {
    if text.is_ascii() {
        return text
            .bytes()
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect();
    }
    text.chars().flat_map(char::to_lowercase).collect()
}

/// One trigram as an index term: the hex of its UTF-8 bytes.
fn gram_term(w: &[char]) -> String {
    let mut buf = [0u8; 4];
    let mut out = String::with_capacity(w.len() * 4);
    for c in w {
        for b in c.encode_utf8(&mut buf).bytes() {
            out.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
            out.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
        }
    }
    out
}

/// The index terms of a text: each distinct case-folded trigram once,
/// space-separated (what `email_grams` stores for a column).
pub fn trigram_tokens(text: &str) -> String {
    let chars = fold(text);
    // A trigram of chars packs into 63 bits; sorting and deduplicating
    // integers is far cheaper than hashing strings.
    let mut packed: Vec<u64> = chars
        .windows(3)
        .filter(|w| indexed(w))
        .map(|w| (u64::from(w[0]) << 42) | (u64::from(w[1]) << 21) | u64::from(w[2]))
        .collect();
    packed.sort_unstable();
    packed.dedup();
    let mut out = String::with_capacity(packed.len() * 7);
    for p in packed {
        if !out.is_empty() {
            out.push(' ');
        }
        let w = [p >> 42, (p >> 21) & 0x1f_ffff, p & 0x1f_ffff]
            .map(|c| char::from_u32(c as u32).unwrap_or('\u{fffd}'));
        out.push_str(&gram_term(&w));
    }
    out
}

/// Whether a trigram is indexed: those that span whitespace are not. They
/// are a third of a text's trigrams and add little selectivity; a needle
/// with spaces is still found through the trigrams of its words, and the
/// exact check after the index keeps the answer exact.
fn indexed(w: &[char]) -> bool {
    !w.iter().any(|c| c.is_whitespace())
}

/// The FTS5 query "every indexed trigram of `needle`, in these columns", or
/// `None` when the needle has none (shorter than three characters between
/// spaces): then the stored text is scanned.
fn trigram_query(cols: &[&str], needle: &str) -> Option<String> {
    let chars = fold(needle);
    let mut terms: Vec<String> = chars
        .windows(3)
        .filter(|w| indexed(w))
        .map(gram_term)
        .collect();
    if terms.is_empty() {
        return None;
    }
    terms.sort();
    terms.dedup();
    Some(format!("{{{}}}: ({})", cols.join(" "), terms.join(" AND ")))
}

struct Builder {
    in_folder: bool,
    params: Vec<Value>,
}

impl Builder {
    fn bind(&mut self, v: impl Into<Value>) -> String {
        self.params.push(v.into());
        format!("?{}", self.params.len())
    }

    fn keyword_exists(&mut self, email: &str, k: &Keyword) -> String {
        let p = self.bind(k.as_str().to_string());
        format!("EXISTS (SELECT 1 FROM keywords k WHERE k.email_id = {email} AND k.keyword = {p})")
    }

    fn sql(&mut self, f: &Filter) -> Result<String> {
        Ok(match f {
            Filter::All => "1".into(),
            Filter::And(v) if v.is_empty() => "1".into(),
            Filter::Or(v) if v.is_empty() => "0".into(),
            Filter::And(v) => self.join(v, " AND ")?,
            Filter::Or(v) => self.join(v, " OR ")?,
            Filter::Not(inner) => format!("NOT ({})", self.sql(inner)?),
            Filter::InFolder(id) => {
                let p = self.bind(id.0);
                format!(
                    "EXISTS (SELECT 1 FROM mailbox_messages x WHERE x.email_id = e.id AND x.folder_id = {p})"
                )
            }
            Filter::InFolderOtherThan(ids) => {
                let list: Vec<String> = ids.iter().map(|i| self.bind(i.0)).collect();
                let list = if list.is_empty() {
                    "NULL".into()
                } else {
                    list.join(", ")
                };
                format!(
                    "EXISTS (SELECT 1 FROM mailbox_messages x WHERE x.email_id = e.id AND x.folder_id NOT IN ({list}))"
                )
            }
            Filter::Uids(ranges) => {
                if !self.in_folder {
                    return Err(Error::Invalid("a UID condition needs a folder".into()));
                }
                if ranges.is_empty() {
                    return Ok("0".into());
                }
                let parts: Vec<String> = ranges
                    .iter()
                    .map(|(a, b)| {
                        let (lo, hi) = if a <= b { (*a, *b) } else { (*b, *a) };
                        let (lo, hi) = (self.bind(lo), self.bind(hi));
                        format!("m.uid BETWEEN {lo} AND {hi}")
                    })
                    .collect();
                format!("({})", parts.join(" OR "))
            }
            Filter::Emails(ids) => {
                let p = self.bind(id_list(ids.iter().map(|e| e.0)));
                format!("e.id IN (SELECT value FROM json_each({p}))")
            }
            Filter::Threads(ids) => {
                let p = self.bind(id_list(ids.iter().map(|t| t.0)));
                format!("e.thread_id IN (SELECT value FROM json_each({p}))")
            }
            Filter::ReceivedBefore(t) => format!("e.received_at < {}", self.bind(time::iso(*t))),
            Filter::ReceivedSince(t) => format!("e.received_at >= {}", self.bind(time::iso(*t))),
            Filter::SentBefore(t) => format!("e.sent_at < {}", self.bind(time::iso(*t))),
            Filter::SentSince(t) => format!("e.sent_at >= {}", self.bind(time::iso(*t))),
            Filter::SentDayBefore(d) => {
                format!("e.sent_day < {}", self.bind(d.as_str().to_string()))
            }
            Filter::SentDayOn(d) => format!("e.sent_day = {}", self.bind(d.as_str().to_string())),
            Filter::SentDaySince(d) => {
                format!("e.sent_day >= {}", self.bind(d.as_str().to_string()))
            }
            Filter::Larger(n) => format!("e.size > {}", self.bind(clamp(*n))),
            Filter::Smaller(n) => format!("e.size < {}", self.bind(clamp(*n))),
            Filter::Keyword(k) => self.keyword_exists("e.id", k),
            Filter::SomeInThreadHaveKeyword(k) => {
                let p = self.bind(k.as_str().to_string());
                format!(
                    "e.thread_id IN (SELECT t.thread_id FROM emails t JOIN keywords k ON k.email_id = t.id AND k.keyword = {p})"
                )
            }
            Filter::NoneInThreadHaveKeyword(k) => {
                let some = self.sql(&Filter::SomeInThreadHaveKeyword(k.clone()))?;
                format!("NOT ({some})")
            }
            Filter::AllInThreadHaveKeyword(k) => {
                let has = self.keyword_exists("t.id", k);
                format!(
                    "NOT EXISTS (SELECT 1 FROM emails t WHERE t.thread_id = e.thread_id AND NOT {has})"
                )
            }
            Filter::HasAttachment(b) => format!("e.has_attachment = {}", self.bind(*b)),
            Filter::Contains(field, needle) => self.contains(*field, needle),
            Filter::Words(field, text) => {
                let words: Vec<&str> = words(text).collect();
                let cols = field.word_columns();
                if words.is_empty() {
                    "1".into()
                } else if cols.is_empty() {
                    self.sql(&Filter::And(
                        words
                            .iter()
                            .map(|w| Filter::Contains(*field, w.to_string()))
                            .collect(),
                    ))?
                } else {
                    let p = self.words_query(*field, text);
                    format!("e.id IN (SELECT rowid FROM email_words WHERE email_words MATCH {p})")
                }
            }
            Filter::Header(name, value) => {
                let (n, v) = (self.bind(name.clone()), self.bind(value.clone()));
                let narrow = match trigram_query(&["headers"], value) {
                    Some(m) => format!(
                        " AND id IN (SELECT rowid FROM email_grams WHERE email_grams MATCH {})",
                        self.bind(m)
                    ),
                    None => String::new(),
                };
                format!(
                    "e.id IN (SELECT id FROM email_text WHERE header_has(headers, {n}, {v}){narrow})"
                )
            }
            Filter::Regex(field, pattern) => {
                regex::Regex::new(pattern)
                    .map_err(|e| Error::Invalid(format!("regular expression: {e}")))?;
                let p = self.bind(pattern.clone());
                let any: Vec<String> = field
                    .columns()
                    .iter()
                    .map(|c| format!("regexp({p}, {c})"))
                    .collect();
                format!(
                    "e.id IN (SELECT id FROM email_text WHERE {})",
                    any.join(" OR ")
                )
            }
            Filter::ModSeqAtLeast(m) => {
                let col = if self.in_folder {
                    "m.modseq"
                } else {
                    "e.modseq"
                };
                format!("{col} >= {}", self.bind(*m as i64))
            }
        })
    }

    fn join(&mut self, v: &[Filter], sep: &str) -> Result<String> {
        let parts: Result<Vec<String>> = v
            .iter()
            .map(|f| self.sql(f).map(|s| format!("({s})")))
            .collect();
        Ok(parts?.join(sep))
    }

    fn contains(&mut self, field: TextField, needle: &str) -> String {
        match self.contains_rows(field, needle) {
            Some(rows) => format!("e.id IN ({rows})"),
            None => "1".into(),
        }
    }

    /// `SELECT rowid ...` of the emails whose `field` contains `needle`
    /// (case-insensitively); `None` for an empty needle (everything).
    fn contains_rows(&mut self, field: TextField, needle: &str) -> Option<String> {
        if needle.is_empty() {
            return None;
        }
        let cols = field.columns();
        let n = self.bind(needle.to_string());
        let check: Vec<String> = cols
            .iter()
            .map(|c| format!("contains_ci({c}, {n})"))
            .collect();
        let check = check.join(" OR ");
        Some(match trigram_query(cols, needle) {
            // Rows holding every trigram of the needle in those columns,
            // then the exact check on the stored text.
            Some(m) => {
                let m = self.bind(m);
                format!(
                    "SELECT id AS rowid FROM email_text WHERE id IN \
                     (SELECT rowid FROM email_grams WHERE email_grams MATCH {m}) AND ({check})"
                )
            }
            // Too short for trigrams: scan the stored text.
            None => format!("SELECT id AS rowid FROM email_text WHERE {check}"),
        })
    }

    /// A condition selective enough to drive the query from the index:
    /// `SELECT rowid ...` of its emails.
    fn driver(&mut self, f: &Filter) -> Option<String> {
        match f {
            Filter::Contains(field, needle) if fold(needle).windows(3).any(indexed) => {
                self.contains_rows(*field, needle)
            }
            Filter::Words(field, text)
                if !field.word_columns().is_empty() && words(text).next().is_some() =>
            {
                let q = self.words_query(*field, text);
                Some(format!(
                    "SELECT rowid FROM email_words WHERE email_words MATCH {q}"
                ))
            }
            Filter::Emails(ids) => {
                let p = self.bind(id_list(ids.iter().map(|e| e.0)));
                Some(format!("SELECT value AS rowid FROM json_each({p})"))
            }
            _ => None,
        }
    }

    /// Every word of `text` in the field: words are runs of letters and
    /// digits, as the word index's tokenizer cuts them.
    fn words_query(&mut self, field: TextField, text: &str) -> String {
        let q = format!(
            "{{{}}}: ({})",
            field.word_columns().join(" "),
            words(text).map(phrase).collect::<Vec<_>>().join(" AND ")
        );
        self.bind(q)
    }

    fn order(&mut self, sort: &[Sort]) -> Result<String> {
        let mut parts = Vec::new();
        for s in sort {
            let dir = if s.ascending { "ASC" } else { "DESC" };
            let expr = match &s.key {
                SortKey::ReceivedAt => "e.received_at".to_string(),
                SortKey::SentAt => "e.sent_at".to_string(),
                SortKey::Size => "e.size".to_string(),
                SortKey::From => "e.sort_from".to_string(),
                SortKey::To => "e.sort_to".to_string(),
                SortKey::Subject => "e.sort_subject".to_string(),
                SortKey::Uid => {
                    if !self.in_folder {
                        return Err(Error::Invalid("sorting by UID needs a folder".into()));
                    }
                    "m.uid".to_string()
                }
                SortKey::Keyword(k) => self.keyword_exists("e.id", k),
            };
            parts.push(format!("{expr} {dir}"));
        }
        // UIDs are unique in a folder: after a UID key no tie is left, and
        // a second UID term would keep SQLite from walking the folder's
        // index in order (it would sort the whole folder instead).
        let by_uid = sort.iter().any(|s| s.key == SortKey::Uid);
        if !by_uid {
            parts.push(if self.in_folder {
                "m.uid ASC".into()
            } else {
                "e.id ASC".into()
            });
        }
        Ok(parts.join(", "))
    }
}

/// Takes the first index-drivable condition out of a filter (the filter
/// itself, or one member of a top-level AND); returns its row query and what
/// is left to check.
fn split_driver(b: &mut Builder, f: &Filter) -> (Option<String>, Filter) {
    match f {
        Filter::And(members) => {
            for (i, m) in members.iter().enumerate() {
                if let Some(d) = b.driver(m) {
                    let mut rest = members.clone();
                    rest.remove(i);
                    return (Some(d), Filter::And(rest));
                }
            }
            (None, f.clone())
        }
        other => match b.driver(other) {
            Some(d) => (Some(d), Filter::All),
            None => (None, f.clone()),
        },
    }
}

fn clamp(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

impl Mailbox {
    /// Runs a query; hits come sorted, threads collapsed if asked, then
    /// `position` and `limit` applied.
    pub fn search(&self, q: &Query) -> Result<Vec<SearchHit>> {
        self.flush_index()?;
        if let Some(f) = q.folder {
            // An unknown folder is an error, not an empty result. (Not
            // `self.folder`, which also counts the folder's messages.)
            let known = self
                .conn
                .query_row("SELECT 1 FROM folders WHERE id = ?1", [f.0], |_| Ok(()))
                .optional()?
                .is_some();
            if !known {
                return Err(Error::NotFound(format!("folder {}", f.0)));
            }
        }
        let mut b = Builder {
            in_folder: q.folder.is_some(),
            params: Vec::new(),
        };
        // A selective text condition drives the query: its rows are read
        // from the index first, and only they are joined (CROSS JOIN fixes
        // that order). Otherwise the folder (or the mailbox) is scanned.
        let (driver, rest) = split_driver(&mut b, &q.filter);
        let (from, folder_cond, uid_col) = match (q.folder, driver) {
            (Some(f), Some(d)) => {
                let p = b.bind(f.0);
                (
                    format!("({d}) AS d CROSS JOIN mailbox_messages m CROSS JOIN emails e"),
                    format!("m.email_id = d.rowid AND m.folder_id = {p} AND e.id = m.email_id"),
                    "m.uid",
                )
            }
            (Some(f), None) => {
                let p = b.bind(f.0);
                (
                    "mailbox_messages m JOIN emails e ON e.id = m.email_id".to_string(),
                    format!("m.folder_id = {p}"),
                    "m.uid",
                )
            }
            (None, Some(d)) => (
                format!("({d}) AS d CROSS JOIN emails e"),
                "e.id = d.rowid".to_string(),
                "NULL",
            ),
            (None, None) => ("emails e".to_string(), "1".to_string(), "NULL"),
        };
        let cond = b.sql(&rest)?;
        let order = b.order(&q.sort)?;
        let sql = format!(
            "SELECT e.id, {uid_col}, e.thread_id FROM {from} WHERE {folder_cond} AND ({cond}) ORDER BY {order}"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(b.params.iter()))?;
        let mut seen_threads = std::collections::HashSet::new();
        let mut out = Vec::new();
        let mut skipped = 0;
        while let Some(r) = rows.next()? {
            if q.collapse_threads && !seen_threads.insert(r.get::<_, i64>(2)?) {
                continue;
            }
            if skipped < q.position {
                skipped += 1;
                continue;
            }
            if q.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            let uid = match r.get::<_, Option<u32>>(1)? {
                Some(u) => Some(Uid::try_from(u)?),
                None => None,
            };
            out.push(SearchHit {
                email_id: EmailId(r.get(0)?),
                uid,
            });
        }
        Ok(out)
    }
}
