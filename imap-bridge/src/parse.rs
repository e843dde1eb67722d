//! IMAP commands from bytes: a complete command (its line and the literals
//! the framer collected, inline as `{n}\r\n` + n bytes) into a [`Command`].
//!
//! The grammar is RFC 9051's, with the extensions we serve (CONDSTORE,
//! QRESYNC, ESEARCH, LIST-EXTENDED/LIST-STATUS, MULTIAPPEND, BINARY, SORT,
//! THREAD, UIDPLUS, ID, QUOTA, COMPRESS). Nothing here allocates in
//! proportion to anything but the input, recursion is bounded, and every
//! failure is a [`ParseError`] the session answers with `BAD`.

/// How deep search keys and parenthesised lists may nest.
const MAX_DEPTH: usize = 32;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The client's tag.
    pub tag: String,
    /// What it asks.
    pub body: Body,
}

/// Why a command could not be parsed: answered `tag BAD text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The tag, when one could be read.
    pub tag: Option<String>,
    /// What was wrong, for the client.
    pub message: String,
}

/// One end of a sequence range: a number or `*` (the largest in use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqNum {
    /// A number.
    Value(u32),
    /// `*`.
    Largest,
}

/// A sequence set: inclusive ranges, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqSet(pub Vec<(SeqNum, SeqNum)>);

impl SeqSet {
    /// Whether `n` is in the set when `*` stands for `largest`.
    pub fn contains(&self, n: u32, largest: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let v = |s: SeqNum| match s {
                SeqNum::Value(v) => v,
                SeqNum::Largest => largest,
            };
            let (lo, hi) = (v(a).min(v(b)), v(a).max(v(b)));
            lo <= n && n <= hi
        })
    }

    /// The ranges with `*` replaced by `largest`, each ordered low to high.
    pub fn ranges(&self, largest: u32) -> Vec<(u32, u32)> {
        self.0
            .iter()
            .map(|&(a, b)| {
                let v = |s: SeqNum| match s {
                    SeqNum::Value(v) => v,
                    SeqNum::Largest => largest,
                };
                (v(a).min(v(b)), v(a).max(v(b)))
            })
            .collect()
    }
}

/// A message flag or keyword as the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    /// A system flag, `\Seen` etc., without the backslash.
    System(String),
    /// A keyword.
    Keyword(String),
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// `FLAGS`: replace.
    Replace,
    /// `+FLAGS`: add.
    Add,
    /// `-FLAGS`: remove.
    Remove,
}

/// A body section: `BODY[1.2.HEADER.FIELDS (Subject)]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// Part numbers (empty: the whole message).
    pub part: Vec<u32>,
    /// What of the part.
    pub text: Option<SectionText>,
}

/// The text-specifier of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    /// `HEADER`.
    Header,
    /// `HEADER.FIELDS (…)`.
    Fields(Vec<String>),
    /// `HEADER.FIELDS.NOT (…)`.
    FieldsNot(Vec<String>),
    /// `TEXT`.
    Text,
    /// `MIME`.
    Mime,
}

/// One FETCH data item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchItem {
    /// `FLAGS`.
    Flags,
    /// `INTERNALDATE`.
    InternalDate,
    /// `RFC822.SIZE`.
    Rfc822Size,
    /// `RFC822` (like `BODY[]`, sets \Seen).
    Rfc822,
    /// `RFC822.HEADER` (like `BODY.PEEK[HEADER]`).
    Rfc822Header,
    /// `RFC822.TEXT` (like `BODY[TEXT]`).
    Rfc822Text,
    /// `ENVELOPE`.
    Envelope,
    /// `BODY` (the structure without extensions).
    Body,
    /// `BODYSTRUCTURE`.
    BodyStructure,
    /// `UID`.
    Uid,
    /// `MODSEQ`.
    ModSeq,
    /// `EMAILID` (RFC 8474).
    EmailId,
    /// `THREADID` (RFC 8474).
    ThreadId,
    /// `BODY[section]<partial>` / `BODY.PEEK…`.
    Section {
        /// The section.
        section: Section,
        /// `<offset.length>`.
        partial: Option<(u32, u32)>,
        /// `.PEEK`: do not set \Seen.
        peek: bool,
    },
    /// `BINARY[part]<partial>` / `BINARY.PEEK…`.
    Binary {
        /// Part numbers.
        part: Vec<u32>,
        /// `<offset.length>`.
        partial: Option<(u32, u32)>,
        /// `.PEEK`.
        peek: bool,
    },
    /// `BINARY.SIZE[part]`.
    BinarySize(Vec<u32>),
}

/// A SEARCH key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    /// All of these (a parenthesised list, or keys side by side).
    And(Vec<SearchKey>),
    /// `OR a b`.
    Or(Box<SearchKey>, Box<SearchKey>),
    /// `NOT k`.
    Not(Box<SearchKey>),
    /// `ALL`.
    All,
    /// A flag test: `SEEN`, `UNSEEN` (negated), `KEYWORD x`…
    Flag(Flag, bool),
    /// `NEW`, `RECENT`: nothing is recent in IMAP4rev2.
    Recent,
    /// `OLD`.
    Old,
    /// `BCC`, `BODY`, `CC`, `FROM`, `SUBJECT`, `TEXT`, `TO` and a string.
    Text(String, String),
    /// `HEADER field value`.
    Header(String, String),
    /// `BEFORE`, `ON`, `SINCE`, `SENTBEFORE`, `SENTON`, `SENTSINCE` and a day
    /// as (year, month, day).
    Date(String, (i32, u32, u32)),
    /// `LARGER n`.
    Larger(u64),
    /// `SMALLER n`.
    Smaller(u64),
    /// `UID set`.
    Uid(SeqSet),
    /// A message sequence set.
    Seq(SeqSet),
    /// `MODSEQ n` (entry names are accepted and ignored).
    ModSeq(u64),
}

/// ESEARCH `RETURN` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SearchReturn {
    /// `MIN`.
    pub min: bool,
    /// `MAX`.
    pub max: bool,
    /// `ALL`.
    pub all: bool,
    /// `COUNT`.
    pub count: bool,
}

/// A SORT criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortCriterion {
    /// `ARRIVAL`.
    Arrival,
    /// `CC`.
    Cc,
    /// `DATE`.
    Date,
    /// `FROM`.
    From,
    /// `SIZE`.
    Size,
    /// `SUBJECT`.
    Subject,
    /// `TO`.
    To,
}

/// A STATUS data item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    /// `MESSAGES`.
    Messages,
    /// `UIDNEXT`.
    UidNext,
    /// `UIDVALIDITY`.
    UidValidity,
    /// `UNSEEN`.
    Unseen,
    /// `DELETED`.
    Deleted,
    /// `SIZE`.
    Size,
    /// `RECENT` (always 0).
    Recent,
    /// `HIGHESTMODSEQ`.
    HighestModSeq,
    /// `APPENDLIMIT`.
    AppendLimit,
}

/// LIST-EXTENDED selection and return options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOptions {
    /// Selection `SUBSCRIBED`.
    pub subscribed: bool,
    /// Selection `SPECIAL-USE`.
    pub special_use_only: bool,
    /// Selection `RECURSIVEMATCH`.
    pub recursive_match: bool,
    /// Return `SUBSCRIBED`.
    pub return_subscribed: bool,
    /// Return `CHILDREN`.
    pub return_children: bool,
    /// Return `SPECIAL-USE`.
    pub return_special_use: bool,
    /// Return `STATUS (…)`.
    pub status: Vec<StatusItem>,
    /// Whether the extended syntax was used (selection or return options).
    pub extended: bool,
}

/// One message of an APPEND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMessage {
    /// Its flags.
    pub flags: Vec<Flag>,
    /// Its internal date (Unix seconds).
    pub date: Option<i64>,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// QRESYNC parameters of SELECT/EXAMINE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qresync {
    /// The UIDVALIDITY the client knows.
    pub uid_validity: u32,
    /// The MODSEQ the client knows.
    pub modseq: u64,
    /// The UIDs it knows, if it said.
    pub known_uids: Option<SeqSet>,
}

/// What a command asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `CAPABILITY`.
    Capability,
    /// `NOOP`.
    Noop,
    /// `LOGOUT`.
    Logout,
    /// `STARTTLS`.
    StartTls,
    /// `AUTHENTICATE mech [initial]`.
    Authenticate {
        /// The mechanism, upper case.
        mechanism: String,
        /// SASL-IR initial response (base64 text; `=` is empty).
        initial: Option<String>,
    },
    /// `LOGIN user password`.
    Login {
        /// User name.
        user: Vec<u8>,
        /// Password.
        password: Vec<u8>,
    },
    /// `ENABLE cap…`.
    Enable(Vec<String>),
    /// `ID (…)` or `ID NIL`.
    Id(Vec<(String, Option<String>)>),
    /// `NAMESPACE`.
    Namespace,
    /// `SELECT`/`EXAMINE`.
    Select {
        /// The mailbox (as sent).
        mailbox: Vec<u8>,
        /// `EXAMINE`.
        read_only: bool,
        /// `(CONDSTORE)`.
        condstore: bool,
        /// `(QRESYNC (…))`.
        qresync: Option<Qresync>,
    },
    /// `CREATE`.
    Create(Vec<u8>),
    /// `DELETE`.
    Delete(Vec<u8>),
    /// `RENAME from to`.
    Rename(Vec<u8>, Vec<u8>),
    /// `SUBSCRIBE`.
    Subscribe(Vec<u8>),
    /// `UNSUBSCRIBE`.
    Unsubscribe(Vec<u8>),
    /// `LIST`.
    List {
        /// Reference name.
        reference: Vec<u8>,
        /// Patterns.
        patterns: Vec<Vec<u8>>,
        /// Extended options.
        options: ListOptions,
    },
    /// `LSUB reference pattern`.
    Lsub {
        /// Reference name.
        reference: Vec<u8>,
        /// Pattern.
        pattern: Vec<u8>,
    },
    /// `STATUS mailbox (items)`.
    Status {
        /// The mailbox.
        mailbox: Vec<u8>,
        /// The items.
        items: Vec<StatusItem>,
    },
    /// `APPEND` (MULTIAPPEND: one or more messages).
    Append {
        /// The mailbox.
        mailbox: Vec<u8>,
        /// The messages.
        messages: Vec<AppendMessage>,
    },
    /// `IDLE`.
    Idle,
    /// `CHECK`.
    Check,
    /// `CLOSE`.
    Close,
    /// `UNSELECT`.
    Unselect,
    /// `EXPUNGE`, or `UID EXPUNGE set`.
    Expunge(Option<SeqSet>),
    /// `[UID] SEARCH`.
    Search {
        /// UID variant.
        uid: bool,
        /// ESEARCH return options, if `RETURN` was given.
        ret: Option<SearchReturn>,
        /// The criteria.
        key: SearchKey,
    },
    /// `[UID] FETCH`.
    Fetch {
        /// UID variant.
        uid: bool,
        /// Which messages.
        set: SeqSet,
        /// What of them.
        items: Vec<FetchItem>,
        /// `CHANGEDSINCE`.
        changed_since: Option<u64>,
        /// `VANISHED`.
        vanished: bool,
    },
    /// `[UID] STORE`.
    Store {
        /// UID variant.
        uid: bool,
        /// Which messages.
        set: SeqSet,
        /// `UNCHANGEDSINCE`.
        unchanged_since: Option<u64>,
        /// Replace, add or remove.
        mode: StoreMode,
        /// `.SILENT`.
        silent: bool,
        /// The flags.
        flags: Vec<Flag>,
    },
    /// `[UID] COPY` / `[UID] MOVE`.
    Copy {
        /// UID variant.
        uid: bool,
        /// Which messages.
        set: SeqSet,
        /// Target mailbox.
        mailbox: Vec<u8>,
        /// MOVE rather than COPY.
        remove: bool,
    },
    /// `[UID] SORT (criteria) charset key`.
    Sort {
        /// UID variant.
        uid: bool,
        /// ESORT return options.
        ret: Option<SearchReturn>,
        /// (reverse, criterion).
        criteria: Vec<(bool, SortCriterion)>,
        /// The search.
        key: SearchKey,
    },
    /// `[UID] THREAD algorithm charset key`.
    Thread {
        /// UID variant.
        uid: bool,
        /// `REFERENCES` (true) or `ORDEREDSUBJECT`.
        references: bool,
        /// The search.
        key: SearchKey,
    },
    /// `GETQUOTA root`.
    GetQuota(Vec<u8>),
    /// `GETQUOTAROOT mailbox`.
    GetQuotaRoot(Vec<u8>),
    /// `SETQUOTA` (refused: quotas are the operator's).
    SetQuota,
    /// `COMPRESS mechanism`.
    Compress(String),
}

struct P<'a> {
    b: &'a [u8],
    i: usize,
}

type R<T> = Result<T, String>;

fn is_atom_char(c: u8) -> bool {
    c > 0x20 && c < 0x7f && !b"(){ %*\"\\]".contains(&c)
}

fn is_astring_char(c: u8) -> bool {
    is_atom_char(c) || c == b']'
}

fn is_list_char(c: u8) -> bool {
    is_astring_char(c) || c == b'%' || c == b'*'
}

impl<'a> P<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }

    fn sp(&mut self) -> R<()> {
        if self.peek() == Some(b' ') {
            self.i += 1;
            Ok(())
        } else {
            Err("expected a space".into())
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> R<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected {:?}", c as char))
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        &self.b[start..self.i]
    }

    /// An atom, upper-cased.
    fn atom(&mut self) -> R<String> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            return Err("expected an atom".into());
        }
        Ok(String::from_utf8_lossy(a).to_ascii_uppercase())
    }

    /// A keyword atom that may contain `.` and `[` (e.g. `BODY.PEEK`).
    fn word(&mut self) -> String {
        let a = self.take_while(|c| is_atom_char(c) && c != b'[' && c != b'<');
        String::from_utf8_lossy(a).to_ascii_uppercase()
    }

    fn number(&mut self) -> R<u64> {
        let d = self.take_while(|c| c.is_ascii_digit());
        if d.is_empty() || d.len() > 19 {
            return Err("expected a number".into());
        }
        std::str::from_utf8(d)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "number out of range".into())
    }

    fn number32(&mut self) -> R<u32> {
        u32::try_from(self.number()?).map_err(|_| "number out of range".into())
    }

    fn nz_number(&mut self) -> R<u32> {
        match self.number32()? {
            0 => Err("zero is not allowed here".into()),
            n => Ok(n),
        }
    }

    fn quoted(&mut self) -> R<Vec<u8>> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r') | Some(b'\n') => return Err("unterminated string".into()),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.i += 1;
                        }
                        _ => return Err("bad escape in a quoted string".into()),
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> R<Vec<u8>> {
        self.eat(b'~');
        self.expect(b'{')?;
        let n = self.number()?;
        if !self.eat(b'+') {
            self.eat(b'-');
        }
        self.expect(b'}')?;
        if !self.b[self.i..].starts_with(b"\r\n") {
            return Err("a literal's size must end the line".into());
        }
        self.i += 2;
        let n = usize::try_from(n).map_err(|_| "literal too large")?;
        let end = self.i.checked_add(n).ok_or("literal too large")?;
        if end > self.b.len() {
            return Err("literal shorter than announced".into());
        }
        let v = self.b[self.i..end].to_vec();
        self.i = end;
        Ok(v)
    }

    fn string(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') | Some(b'~') => self.literal(),
            _ => Err("expected a string".into()),
        }
    }

    fn astring(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"' | b'{' | b'~') => self.string(),
            _ => {
                let a = self.take_while(is_astring_char);
                if a.is_empty() {
                    Err("expected a string or atom".into())
                } else {
                    Ok(a.to_vec())
                }
            }
        }
    }

    fn nstring(&mut self) -> R<Option<Vec<u8>>> {
        if self.b[self.i..].len() >= 3 && self.b[self.i..self.i + 3].eq_ignore_ascii_case(b"NIL") {
            self.i += 3;
            return Ok(None);
        }
        self.string().map(Some)
    }

    fn text_astring(&mut self) -> R<String> {
        String::from_utf8(self.astring()?).map_err(|_| "expected UTF-8 text".into())
    }

    fn list_mailbox(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"' | b'{' | b'~') => self.string(),
            _ => {
                let a = self.take_while(is_list_char);
                if a.is_empty() {
                    Err("expected a mailbox pattern".into())
                } else {
                    Ok(a.to_vec())
                }
            }
        }
    }

    fn seq_num(&mut self) -> R<SeqNum> {
        if self.eat(b'*') {
            Ok(SeqNum::Largest)
        } else {
            Ok(SeqNum::Value(self.nz_number()?))
        }
    }

    fn seq_set(&mut self) -> R<SeqSet> {
        if self.peek() == Some(b'$') {
            return Err("saved search results ($) are not supported".into());
        }
        let mut v = Vec::new();
        loop {
            let a = self.seq_num()?;
            let b = if self.eat(b':') { self.seq_num()? } else { a };
            v.push((a, b));
            if v.len() > 100_000 {
                return Err("sequence set too long".into());
            }
            if !self.eat(b',') {
                return Ok(SeqSet(v));
            }
        }
    }

    fn flag(&mut self) -> R<Flag> {
        if self.eat(b'\\') {
            if self.eat(b'*') {
                return Ok(Flag::System("*".into()));
            }
            let a = self.atom()?;
            Ok(Flag::System(a))
        } else {
            let a = self.take_while(is_atom_char);
            if a.is_empty() {
                return Err("expected a flag".into());
            }
            Ok(Flag::Keyword(String::from_utf8_lossy(a).into_owned()))
        }
    }

    fn flag_list(&mut self) -> R<Vec<Flag>> {
        self.expect(b'(')?;
        let mut v = Vec::new();
        if self.eat(b')') {
            return Ok(v);
        }
        loop {
            v.push(self.flag()?);
            if self.eat(b')') {
                return Ok(v);
            }
            self.sp()?;
        }
    }

    fn month(&mut self) -> R<u32> {
        let m = self.b.get(self.i..self.i + 3).ok_or("expected a month")?;
        const MONTHS: [&[u8]; 12] = [
            b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN", b"JUL", b"AUG", b"SEP", b"OCT", b"NOV",
            b"DEC",
        ];
        let n = MONTHS
            .iter()
            .position(|x| x.eq_ignore_ascii_case(m))
            .ok_or("expected a month like Jan")?;
        self.i += 3;
        Ok(n as u32 + 1)
    }

    fn date_text(&mut self) -> R<(i32, u32, u32)> {
        let day = self.number32()?;
        self.expect(b'-')?;
        let month = self.month()?;
        self.expect(b'-')?;
        let year = self.number32()?;
        if !(1..=31).contains(&day) || !(1..=9999).contains(&year) {
            return Err("invalid date".into());
        }
        Ok((year as i32, month, day))
    }

    /// `date`: `1-Feb-1994` or the same in quotes.
    fn date(&mut self) -> R<(i32, u32, u32)> {
        if self.eat(b'"') {
            let d = self.date_text()?;
            self.expect(b'"')?;
            Ok(d)
        } else {
            self.date_text()
        }
    }

    /// `date-time`: `"17-Jul-1996 02:44:25 -0700"` → Unix seconds.
    fn date_time(&mut self) -> R<i64> {
        self.expect(b'"')?;
        self.eat(b' ');
        let (y, mo, d) = self.date_text()?;
        self.sp()?;
        let two = |p: &mut Self| -> R<u32> {
            let s = p.b.get(p.i..p.i + 2).ok_or("bad time")?;
            if !s.iter().all(u8::is_ascii_digit) {
                return Err("bad time".into());
            }
            p.i += 2;
            Ok(u32::from(s[0] - b'0') * 10 + u32::from(s[1] - b'0'))
        };
        let h = two(self)?;
        self.expect(b':')?;
        let mi = two(self)?;
        self.expect(b':')?;
        let s = two(self)?;
        self.sp()?;
        let sign = match self.peek() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err("bad zone".into()),
        };
        self.i += 1;
        let zh = two(self)?;
        let zm = two(self)?;
        self.expect(b'"')?;
        if h > 23 || mi > 59 || s > 60 || zm > 59 {
            return Err("invalid time".into());
        }
        let days = crate::date::days_from_civil(y, mo, d);
        let local = days * 86_400 + i64::from(h * 3600 + mi * 60 + s);
        Ok(local - sign * i64::from(zh * 3600 + zm * 60))
    }

    fn search_key(&mut self, depth: usize) -> R<SearchKey> {
        if depth > MAX_DEPTH {
            return Err("search nested too deeply".into());
        }
        if self.eat(b'(') {
            let mut v = vec![self.search_key(depth + 1)?];
            while !self.eat(b')') {
                self.sp()?;
                v.push(self.search_key(depth + 1)?);
            }
            return Ok(SearchKey::And(v));
        }
        if self.peek().is_some_and(|c| c.is_ascii_digit() || c == b'*') {
            return Ok(SearchKey::Seq(self.seq_set()?));
        }
        let k = self.atom()?;
        let flag = |name: &str, on: bool| Ok(SearchKey::Flag(Flag::System(name.into()), on));
        match k.as_str() {
            "ALL" => Ok(SearchKey::All),
            "ANSWERED" => flag("ANSWERED", true),
            "DELETED" => flag("DELETED", true),
            "DRAFT" => flag("DRAFT", true),
            "FLAGGED" => flag("FLAGGED", true),
            "SEEN" => flag("SEEN", true),
            "UNANSWERED" => flag("ANSWERED", false),
            "UNDELETED" => flag("DELETED", false),
            "UNDRAFT" => flag("DRAFT", false),
            "UNFLAGGED" => flag("FLAGGED", false),
            "UNSEEN" => flag("SEEN", false),
            "NEW" | "RECENT" => Ok(SearchKey::Recent),
            "OLD" => Ok(SearchKey::Old),
            "KEYWORD" | "UNKEYWORD" => {
                self.sp()?;
                let f = self.flag()?;
                Ok(SearchKey::Flag(f, k == "KEYWORD"))
            }
            "BCC" | "BODY" | "CC" | "FROM" | "SUBJECT" | "TEXT" | "TO" => {
                self.sp()?;
                let s = String::from_utf8_lossy(&self.astring()?).into_owned();
                Ok(SearchKey::Text(k, s))
            }
            "HEADER" => {
                self.sp()?;
                let f = self.text_astring()?;
                self.sp()?;
                let v = String::from_utf8_lossy(&self.astring()?).into_owned();
                Ok(SearchKey::Header(f, v))
            }
            "BEFORE" | "ON" | "SINCE" | "SENTBEFORE" | "SENTON" | "SENTSINCE" => {
                self.sp()?;
                Ok(SearchKey::Date(k, self.date()?))
            }
            "LARGER" | "SMALLER" => {
                self.sp()?;
                let n = self.number()?;
                Ok(if k == "LARGER" {
                    SearchKey::Larger(n)
                } else {
                    SearchKey::Smaller(n)
                })
            }
            "UID" => {
                self.sp()?;
                Ok(SearchKey::Uid(self.seq_set()?))
            }
            "NOT" => {
                self.sp()?;
                Ok(SearchKey::Not(Box::new(self.search_key(depth + 1)?)))
            }
            "OR" => {
                self.sp()?;
                let a = self.search_key(depth + 1)?;
                self.sp()?;
                let b = self.search_key(depth + 1)?;
                Ok(SearchKey::Or(Box::new(a), Box::new(b)))
            }
            "MODSEQ" => {
                self.sp()?;
                if self.peek() == Some(b'"') {
                    self.quoted()?;
                    self.sp()?;
                    self.atom()?;
                    self.sp()?;
                }
                Ok(SearchKey::ModSeq(self.number()?))
            }
            other => Err(format!("unknown search key {other}")),
        }
    }

    /// Search criteria: one or more keys separated by spaces, to the end.
    fn search_program(&mut self) -> R<SearchKey> {
        let mut v = vec![self.search_key(0)?];
        while !self.at_end() {
            self.sp()?;
            v.push(self.search_key(0)?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            SearchKey::And(v)
        })
    }

    fn charset(&mut self) -> R<()> {
        let c = String::from_utf8_lossy(&self.astring()?).to_ascii_uppercase();
        if c == "UTF-8" || c == "US-ASCII" {
            Ok(())
        } else {
            Err(format!("BADCHARSET:{c}"))
        }
    }

    fn search_return(&mut self) -> R<SearchReturn> {
        let mut r = SearchReturn::default();
        self.expect(b'(')?;
        if self.eat(b')') {
            r.all = true;
            return Ok(r);
        }
        loop {
            match self.atom()?.as_str() {
                "MIN" => r.min = true,
                "MAX" => r.max = true,
                "ALL" => r.all = true,
                "COUNT" => r.count = true,
                other => return Err(format!("unknown RETURN option {other}")),
            }
            if self.eat(b')') {
                return Ok(r);
            }
            self.sp()?;
        }
    }

    fn section_part(&mut self) -> R<Vec<u32>> {
        let mut part = Vec::new();
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            part.push(self.nz_number()?);
            if part.len() > 64 {
                return Err("section too deep".into());
            }
            if !self.eat(b'.') {
                break;
            }
        }
        Ok(part)
    }

    fn header_list(&mut self) -> R<Vec<String>> {
        self.sp()?;
        self.expect(b'(')?;
        let mut v = vec![self.text_astring()?];
        while !self.eat(b')') {
            self.sp()?;
            v.push(self.text_astring()?);
        }
        Ok(v)
    }

    fn section(&mut self) -> R<Section> {
        self.expect(b'[')?;
        let part = self.section_part()?;
        let after_dot = !part.is_empty() && self.b[self.i - 1] == b'.';
        let text = if self.peek() == Some(b']') {
            if after_dot {
                return Err("section ends with a dot".into());
            }
            None
        } else {
            if !part.is_empty() && !after_dot {
                return Err("bad section".into());
            }
            let w = self.word();
            Some(match w.as_str() {
                "HEADER" => SectionText::Header,
                "TEXT" => SectionText::Text,
                "MIME" if !part.is_empty() => SectionText::Mime,
                "HEADER.FIELDS" => SectionText::Fields(self.header_list()?),
                "HEADER.FIELDS.NOT" => SectionText::FieldsNot(self.header_list()?),
                _ => return Err("bad section".into()),
            })
        };
        self.expect(b']')?;
        Ok(Section { part, text })
    }

    fn partial(&mut self) -> R<Option<(u32, u32)>> {
        if !self.eat(b'<') {
            return Ok(None);
        }
        let a = self.number32()?;
        self.expect(b'.')?;
        let b = self.nz_number()?;
        self.expect(b'>')?;
        Ok(Some((a, b)))
    }

    fn fetch_item(&mut self) -> R<FetchItem> {
        let w = self.word();
        Ok(match w.as_str() {
            "FLAGS" => FetchItem::Flags,
            "INTERNALDATE" => FetchItem::InternalDate,
            "RFC822.SIZE" => FetchItem::Rfc822Size,
            "RFC822" => FetchItem::Rfc822,
            "RFC822.HEADER" => FetchItem::Rfc822Header,
            "RFC822.TEXT" => FetchItem::Rfc822Text,
            "ENVELOPE" => FetchItem::Envelope,
            "BODYSTRUCTURE" => FetchItem::BodyStructure,
            "UID" => FetchItem::Uid,
            "MODSEQ" => FetchItem::ModSeq,
            "EMAILID" => FetchItem::EmailId,
            "THREADID" => FetchItem::ThreadId,
            "BODY" if self.peek() != Some(b'[') => FetchItem::Body,
            "BODY" | "BODY.PEEK" => {
                let section = self.section()?;
                let partial = self.partial()?;
                FetchItem::Section {
                    section,
                    partial,
                    peek: w == "BODY.PEEK",
                }
            }
            "BINARY" | "BINARY.PEEK" => {
                self.expect(b'[')?;
                let part = self.section_part()?;
                self.expect(b']')?;
                let partial = self.partial()?;
                FetchItem::Binary {
                    part,
                    partial,
                    peek: w == "BINARY.PEEK",
                }
            }
            "BINARY.SIZE" => {
                self.expect(b'[')?;
                let part = self.section_part()?;
                self.expect(b']')?;
                FetchItem::BinarySize(part)
            }
            "" => return Err("expected a fetch item".into()),
            other => return Err(format!("unknown fetch item {other}")),
        })
    }

    fn fetch_items(&mut self) -> R<Vec<FetchItem>> {
        if self.eat(b'(') {
            let mut v = vec![self.fetch_item()?];
            while !self.eat(b')') {
                self.sp()?;
                v.push(self.fetch_item()?);
            }
            return Ok(v);
        }
        let save = self.i;
        let w = self.word();
        use FetchItem::*;
        Ok(match w.as_str() {
            "ALL" => vec![Flags, InternalDate, Rfc822Size, Envelope],
            "FAST" => vec![Flags, InternalDate, Rfc822Size],
            "FULL" => vec![Flags, InternalDate, Rfc822Size, Envelope, Body],
            _ => {
                self.i = save;
                vec![self.fetch_item()?]
            }
        })
    }

    fn status_items(&mut self) -> R<Vec<StatusItem>> {
        self.expect(b'(')?;
        let mut v = Vec::new();
        loop {
            v.push(match self.atom()?.as_str() {
                "MESSAGES" => StatusItem::Messages,
                "UIDNEXT" => StatusItem::UidNext,
                "UIDVALIDITY" => StatusItem::UidValidity,
                "UNSEEN" => StatusItem::Unseen,
                "DELETED" => StatusItem::Deleted,
                "SIZE" => StatusItem::Size,
                "RECENT" => StatusItem::Recent,
                "HIGHESTMODSEQ" => StatusItem::HighestModSeq,
                "APPENDLIMIT" => StatusItem::AppendLimit,
                other => return Err(format!("unknown status item {other}")),
            });
            if self.eat(b')') {
                return Ok(v);
            }
            self.sp()?;
        }
    }

    fn list(&mut self) -> R<Body> {
        let mut options = ListOptions::default();
        if self.eat(b'(') {
            options.extended = true;
            while !self.eat(b')') {
                self.eat(b' ');
                match self.atom()?.as_str() {
                    "SUBSCRIBED" => options.subscribed = true,
                    "REMOTE" => {}
                    "RECURSIVEMATCH" => options.recursive_match = true,
                    "SPECIAL-USE" => options.special_use_only = true,
                    other => return Err(format!("unknown LIST selection option {other}")),
                }
            }
            if options.recursive_match && !options.subscribed && !options.special_use_only {
                return Err("RECURSIVEMATCH needs another selection option".into());
            }
            self.sp()?;
        }
        let reference = self.astring()?;
        self.sp()?;
        let mut patterns = Vec::new();
        if self.eat(b'(') {
            options.extended = true;
            patterns.push(self.list_mailbox()?);
            while !self.eat(b')') {
                self.sp()?;
                patterns.push(self.list_mailbox()?);
            }
        } else {
            patterns.push(self.list_mailbox()?);
        }
        if self.eat(b' ') {
            if self.atom()? != "RETURN" {
                return Err("expected RETURN".into());
            }
            options.extended = true;
            self.sp()?;
            self.expect(b'(')?;
            while !self.eat(b')') {
                self.eat(b' ');
                match self.atom()?.as_str() {
                    "SUBSCRIBED" => options.return_subscribed = true,
                    "CHILDREN" => options.return_children = true,
                    "SPECIAL-USE" => options.return_special_use = true,
                    "STATUS" => {
                        self.sp()?;
                        options.status = self.status_items()?;
                    }
                    other => return Err(format!("unknown LIST return option {other}")),
                }
            }
        }
        Ok(Body::List {
            reference,
            patterns,
            options,
        })
    }

    fn select(&mut self, read_only: bool) -> R<Body> {
        self.sp()?;
        let mailbox = self.astring()?;
        let mut condstore = false;
        let mut qresync = None;
        if self.eat(b' ') {
            self.expect(b'(')?;
            loop {
                match self.atom()?.as_str() {
                    "CONDSTORE" => condstore = true,
                    "QRESYNC" => {
                        self.sp()?;
                        self.expect(b'(')?;
                        let uid_validity = self.nz_number()?;
                        self.sp()?;
                        let modseq = self.number()?;
                        let mut known_uids = None;
                        if self.eat(b' ') {
                            if self.peek() != Some(b'(') {
                                known_uids = Some(self.seq_set()?);
                                self.eat(b' ');
                            }
                            if self.eat(b'(') {
                                self.seq_set()?;
                                self.sp()?;
                                self.seq_set()?;
                                self.expect(b')')?;
                            }
                        }
                        self.expect(b')')?;
                        qresync = Some(Qresync {
                            uid_validity,
                            modseq,
                            known_uids,
                        });
                    }
                    other => return Err(format!("unknown SELECT parameter {other}")),
                }
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        }
        Ok(Body::Select {
            mailbox,
            read_only,
            condstore,
            qresync,
        })
    }

    fn append(&mut self) -> R<Body> {
        self.sp()?;
        let mailbox = self.astring()?;
        let mut messages = Vec::new();
        while self.eat(b' ') {
            let flags = if self.peek() == Some(b'(') {
                let f = self.flag_list()?;
                self.sp()?;
                f
            } else {
                Vec::new()
            };
            let date = if self.peek() == Some(b'"') {
                let d = self.date_time()?;
                self.sp()?;
                Some(d)
            } else {
                None
            };
            let data = self.literal()?;
            messages.push(AppendMessage { flags, date, data });
        }
        if messages.is_empty() {
            return Err("APPEND needs a message".into());
        }
        Ok(Body::Append { mailbox, messages })
    }

    fn store(&mut self, uid: bool) -> R<Body> {
        self.sp()?;
        let set = self.seq_set()?;
        self.sp()?;
        let mut unchanged_since = None;
        if self.eat(b'(') {
            if self.atom()? != "UNCHANGEDSINCE" {
                return Err("expected UNCHANGEDSINCE".into());
            }
            self.sp()?;
            unchanged_since = Some(self.number()?);
            self.expect(b')')?;
            self.sp()?;
        }
        let mode = if self.eat(b'+') {
            StoreMode::Add
        } else if self.eat(b'-') {
            StoreMode::Remove
        } else {
            StoreMode::Replace
        };
        let silent = match self.word().as_str() {
            "FLAGS" => false,
            "FLAGS.SILENT" => true,
            _ => return Err("expected FLAGS".into()),
        };
        self.sp()?;
        let flags = if self.peek() == Some(b'(') {
            self.flag_list()?
        } else {
            let mut v = vec![self.flag()?];
            while self.eat(b' ') {
                v.push(self.flag()?);
            }
            v
        };
        Ok(Body::Store {
            uid,
            set,
            unchanged_since,
            mode,
            silent,
            flags,
        })
    }

    fn fetch(&mut self, uid: bool) -> R<Body> {
        self.sp()?;
        let set = self.seq_set()?;
        self.sp()?;
        let items = self.fetch_items()?;
        let mut changed_since = None;
        let mut vanished = false;
        if self.eat(b' ') {
            self.expect(b'(')?;
            loop {
                match self.atom()?.as_str() {
                    "CHANGEDSINCE" => {
                        self.sp()?;
                        changed_since = Some(self.number()?);
                    }
                    "VANISHED" if uid => vanished = true,
                    other => return Err(format!("unknown FETCH modifier {other}")),
                }
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
            if vanished && changed_since.is_none() {
                return Err("VANISHED needs CHANGEDSINCE".into());
            }
        }
        Ok(Body::Fetch {
            uid,
            set,
            items,
            changed_since,
            vanished,
        })
    }

    fn search(&mut self, uid: bool) -> R<Body> {
        self.sp()?;
        let mut ret = None;
        let save = self.i;
        if self.word() == "RETURN" {
            self.sp()?;
            ret = Some(self.search_return()?);
            self.sp()?;
        } else {
            self.i = save;
        }
        let save = self.i;
        if self.word() == "CHARSET" {
            self.sp()?;
            self.charset()?;
            self.sp()?;
        } else {
            self.i = save;
        }
        let key = self.search_program()?;
        Ok(Body::Search { uid, ret, key })
    }

    fn sort(&mut self, uid: bool) -> R<Body> {
        self.sp()?;
        let mut ret = None;
        let save = self.i;
        if self.word() == "RETURN" {
            self.sp()?;
            ret = Some(self.search_return()?);
            self.sp()?;
        } else {
            self.i = save;
        }
        self.expect(b'(')?;
        let mut criteria = Vec::new();
        let mut reverse = false;
        loop {
            let a = self.atom()?;
            let c = match a.as_str() {
                "REVERSE" => {
                    reverse = true;
                    self.sp()?;
                    continue;
                }
                "ARRIVAL" => SortCriterion::Arrival,
                "CC" => SortCriterion::Cc,
                "DATE" => SortCriterion::Date,
                "FROM" => SortCriterion::From,
                "SIZE" => SortCriterion::Size,
                "SUBJECT" => SortCriterion::Subject,
                "TO" => SortCriterion::To,
                other => return Err(format!("unknown sort criterion {other}")),
            };
            criteria.push((reverse, c));
            reverse = false;
            if self.eat(b')') {
                break;
            }
            self.sp()?;
        }
        self.sp()?;
        self.charset()?;
        self.sp()?;
        let key = self.search_program()?;
        Ok(Body::Sort {
            uid,
            ret,
            criteria,
            key,
        })
    }

    fn thread(&mut self, uid: bool) -> R<Body> {
        self.sp()?;
        let references = match self.atom()?.as_str() {
            "REFERENCES" => true,
            "ORDEREDSUBJECT" => false,
            other => return Err(format!("unknown thread algorithm {other}")),
        };
        self.sp()?;
        self.charset()?;
        self.sp()?;
        let key = self.search_program()?;
        Ok(Body::Thread {
            uid,
            references,
            key,
        })
    }

    fn id(&mut self) -> R<Body> {
        self.sp()?;
        let mut v = Vec::new();
        if self.eat(b'(') {
            while !self.eat(b')') {
                self.eat(b' ');
                let k = String::from_utf8_lossy(&self.string()?).into_owned();
                self.sp()?;
                let val = self
                    .nstring()?
                    .map(|x| String::from_utf8_lossy(&x).into_owned());
                v.push((k, val));
                if v.len() > 30 {
                    return Err("too many ID fields".into());
                }
            }
        } else {
            self.nstring()?;
        }
        Ok(Body::Id(v))
    }

    fn command(&mut self) -> R<Body> {
        let name = self.atom()?;
        let mailbox1 = |p: &mut Self| -> R<Vec<u8>> {
            p.sp()?;
            p.astring()
        };
        let body = match name.as_str() {
            "CAPABILITY" => Body::Capability,
            "NOOP" => Body::Noop,
            "LOGOUT" => Body::Logout,
            "STARTTLS" => Body::StartTls,
            "NAMESPACE" => Body::Namespace,
            "IDLE" => Body::Idle,
            "CHECK" => Body::Check,
            "CLOSE" => Body::Close,
            "UNSELECT" => Body::Unselect,
            "EXPUNGE" => Body::Expunge(None),
            "AUTHENTICATE" => {
                self.sp()?;
                let mechanism = self.atom()?;
                let initial = if self.eat(b' ') {
                    let t = self.take_while(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c));
                    Some(String::from_utf8_lossy(t).into_owned())
                } else {
                    None
                };
                Body::Authenticate { mechanism, initial }
            }
            "LOGIN" => {
                self.sp()?;
                let user = self.astring()?;
                self.sp()?;
                let password = self.astring()?;
                Body::Login { user, password }
            }
            "ENABLE" => {
                let mut v = Vec::new();
                while self.eat(b' ') {
                    v.push(self.atom()?);
                }
                if v.is_empty() {
                    return Err("ENABLE needs a capability".into());
                }
                Body::Enable(v)
            }
            "ID" => self.id()?,
            "SELECT" => self.select(false)?,
            "EXAMINE" => self.select(true)?,
            "CREATE" => {
                let m = mailbox1(self)?;
                if self.eat(b' ') {
                    // CREATE-SPECIAL-USE parameters are not supported.
                    return Err("CREATE parameters are not supported".into());
                }
                Body::Create(m)
            }
            "DELETE" => Body::Delete(mailbox1(self)?),
            "RENAME" => {
                let a = mailbox1(self)?;
                let b = mailbox1(self)?;
                Body::Rename(a, b)
            }
            "SUBSCRIBE" => Body::Subscribe(mailbox1(self)?),
            "UNSUBSCRIBE" => Body::Unsubscribe(mailbox1(self)?),
            "LIST" => {
                self.sp()?;
                self.list()?
            }
            "LSUB" => {
                self.sp()?;
                let reference = self.astring()?;
                self.sp()?;
                let pattern = self.list_mailbox()?;
                Body::Lsub { reference, pattern }
            }
            "STATUS" => {
                let mailbox = mailbox1(self)?;
                self.sp()?;
                let items = self.status_items()?;
                Body::Status { mailbox, items }
            }
            "APPEND" => self.append()?,
            "SEARCH" => self.search(false)?,
            "FETCH" => self.fetch(false)?,
            "STORE" => self.store(false)?,
            "COPY" | "MOVE" => {
                self.sp()?;
                let set = self.seq_set()?;
                let mailbox = mailbox1(self)?;
                Body::Copy {
                    uid: false,
                    set,
                    mailbox,
                    remove: name == "MOVE",
                }
            }
            "SORT" => self.sort(false)?,
            "THREAD" => self.thread(false)?,
            "UID" => {
                self.sp()?;
                let sub = self.atom()?;
                match sub.as_str() {
                    "FETCH" => self.fetch(true)?,
                    "STORE" => self.store(true)?,
                    "SEARCH" => self.search(true)?,
                    "SORT" => self.sort(true)?,
                    "THREAD" => self.thread(true)?,
                    "EXPUNGE" => {
                        self.sp()?;
                        Body::Expunge(Some(self.seq_set()?))
                    }
                    "COPY" | "MOVE" => {
                        self.sp()?;
                        let set = self.seq_set()?;
                        let mailbox = mailbox1(self)?;
                        Body::Copy {
                            uid: true,
                            set,
                            mailbox,
                            remove: sub == "MOVE",
                        }
                    }
                    other => return Err(format!("unknown UID command {other}")),
                }
            }
            "GETQUOTA" => Body::GetQuota(mailbox1(self)?),
            "GETQUOTAROOT" => Body::GetQuotaRoot(mailbox1(self)?),
            "SETQUOTA" => {
                self.i = self.b.len();
                Body::SetQuota
            }
            "COMPRESS" => {
                self.sp()?;
                Body::Compress(self.atom()?)
            }
            other => return Err(format!("unknown command {other}")),
        };
        if !self.at_end() {
            return Err("unexpected characters after the command".into());
        }
        Ok(body)
    }
}

/// Parses one complete command. `bytes` excludes the final CRLF.
pub fn parse_command(bytes: &[u8]) -> Result<Command, ParseError> {
    let mut p = P { b: bytes, i: 0 };
    let tag = p.take_while(|c| is_astring_char(c) && c != b'+');
    if tag.is_empty() {
        return Err(ParseError {
            tag: None,
            message: "expected a tag".into(),
        });
    }
    let tag = String::from_utf8_lossy(tag).into_owned();
    let fail = |message: String| ParseError {
        tag: Some(tag.clone()),
        message,
    };
    p.sp().map_err(fail)?;
    let body = p.command().map_err(fail)?;
    Ok(Command { tag, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Body {
        match parse_command(s.as_bytes()) {
            Ok(c) => c.body,
            Err(e) => panic!("{s}: {}", e.message),
        }
    }

    #[test]
    fn rfc_examples_parse() {
        assert_eq!(
            ok("a002 LOGIN SMITH SESAME"),
            Body::Login {
                user: b"SMITH".to_vec(),
                password: b"SESAME".to_vec()
            }
        );
        assert!(matches!(
            ok("A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])"),
            Body::Fetch { items, .. } if items.len() == 2
        ));
        assert!(matches!(
            ok("A003 APPEND saved-messages (\\Seen) {3}\r\nabc"),
            Body::Append { messages, .. } if messages[0].data == b"abc"
        ));
        assert!(matches!(
            ok("A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\""),
            Body::Search { key: SearchKey::And(v), .. } if v.len() == 3
        ));
        assert!(matches!(
            ok("A003 STORE 2:4 +FLAGS (\\Deleted)"),
            Body::Store {
                mode: StoreMode::Add,
                ..
            }
        ));
        assert!(matches!(
            ok("a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)"),
            Body::Fetch {
                changed_since: Some(12345),
                vanished: true,
                ..
            }
        ));
        assert!(matches!(
            ok("A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))"),
            Body::Select {
                qresync: Some(Qresync {
                    uid_validity: 67890007,
                    ..
                }),
                ..
            }
        ));
        assert!(matches!(
            ok("A02 LIST (SUBSCRIBED) \"\" \"*\" RETURN (CHILDREN STATUS (MESSAGES UNSEEN))"),
            Body::List { options, .. } if options.subscribed && options.status.len() == 2
        ));
        assert!(matches!(
            ok("A282 SORT (SUBJECT REVERSE DATE) UTF-8 ALL"),
            Body::Sort { criteria, .. } if criteria == vec![(false, SortCriterion::Subject), (true, SortCriterion::Date)]
        ));
        assert!(matches!(
            ok("a UID SEARCH RETURN (MIN COUNT) OR SEEN (UNSEEN 1:5)"),
            Body::Search {
                uid: true,
                ret: Some(_),
                ..
            }
        ));
        assert_eq!(
            ok("a FETCH 1 BODY.PEEK[1.2.MIME]<0.100>"),
            Body::Fetch {
                uid: false,
                set: SeqSet(vec![(SeqNum::Value(1), SeqNum::Value(1))]),
                items: vec![FetchItem::Section {
                    section: Section {
                        part: vec![1, 2],
                        text: Some(SectionText::Mime)
                    },
                    partial: Some((0, 100)),
                    peek: true
                }],
                changed_since: None,
                vanished: false
            }
        );
    }

    #[test]
    fn append_date_is_utc_seconds() {
        let Body::Append { messages, .. } =
            ok("A1 APPEND x \" 1-Jan-2000 00:00:00 +0100\" {1}\r\nz")
        else {
            panic!()
        };
        assert_eq!(messages[0].date, Some(946_681_200));
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        for s in [
            "",
            "a",
            "a FETCH",
            "a FETCH 0 FLAGS",
            "a FETCH 1:* BODY[1.]",
            "a APPEND x {5}\r\nab",
            "a APPEND x {99999999999999999999}\r\n",
            "a SEARCH (((((((((((((((((((((((((((((((((((ALL)))))))))))))))))))))))))))))))))))",
            "a LOGIN \"unterminated",
            "+ NOOP",
            "a NOOP extra",
        ] {
            assert!(parse_command(s.as_bytes()).is_err(), "{s}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_command(&bytes);
        }
    }
}
