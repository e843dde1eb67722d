//! One POP3 connection's protocol state (RFC 1939; CAPA and response
//! codes, RFC 2449; AUTH PLAIN, RFC 5034; STLS, RFC 2595): command lines
//! in, response bytes out. Like the IMAP session it holds no mail: the
//! maildrop is the Inbox as it was at login, read over the link, and the
//! session's deletions are carried out in one transaction at QUIT.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cofre_storage::link::route::Router;
use cofre_storage::link::ws::ClientError;
use cofre_storage::link::{ErrorCode, Op, Reply};
use cofre_storage::mailbox::RecordKind;
use cofre_storage::primary::SessionId;
use cofre_storage::settings::{self, Pop3Settings, RETRIEVED_KEYWORD};
use cofre_storage::throttle::LoginLimiter;
use cofre_storage::types::{EmailId, FolderId, Role, Uid};
use cofre_storage::{AliasAddress, Keyword};

/// Settings every POP3 session of a listener shares.
pub struct Config {
    /// Whether USER/PASS and AUTH are allowed without TLS (loopback).
    pub plain_auth: bool,
    /// Whether STLS is offered.
    pub stls: bool,
    /// Pause after a failed login.
    pub failed_login_delay: Duration,
    /// Failed-login throttling, shared with the other front ends.
    pub limiter: Arc<LoginLimiter>,
}

/// What the connection loop does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read the next command.
    Continue,
    /// Close the connection (after writing what is buffered).
    Close,
    /// Start TLS, then read the next command.
    StartTls,
    /// Read one SASL response line, then `auth_continue`.
    SaslContinue,
}

/// One message of the maildrop, at its number's index.
#[derive(Debug, Clone, Copy)]
struct Item {
    uid: u32,
    email: EmailId,
    size: u64,
    deleted: bool,
    retrieved: bool,
}

/// The logged-in state: the session on the primary and the maildrop.
struct Auth {
    address: AliasAddress,
    session: SessionId,
    inbox: FolderId,
    uid_validity: u32,
    items: Vec<Item>,
    settings: Pop3Settings,
    /// Where retrieved mail goes at QUIT (the setting's folder, found).
    move_to: Option<FolderId>,
}

/// A refusal: `-ERR [code] text`.
struct Err {
    code: Option<&'static str>,
    text: String,
}

fn err(code: Option<&'static str>, text: impl Into<String>) -> Err {
    Err {
        code,
        text: text.into(),
    }
}

type Res<T> = Result<T, Err>;

fn link_error(e: ClientError) -> Err {
    match e {
        ClientError::Remote(e) if e.code == ErrorCode::NoSession => err(
            Some("SYS/TEMP"),
            "the session ended on the server; log in again",
        ),
        ClientError::Remote(e) => err(Some("SYS/PERM"), e.message),
        ClientError::LinkDown(_) | ClientError::Refused(_) => err(
            Some("SYS/TEMP"),
            "the mail store is unreachable; try again shortly",
        ),
    }
}

/// The longest command line (RFC 2449 allows 255 octets of arguments;
/// an AUTH PLAIN initial response for a long address and password needs
/// more).
pub const MAX_LINE: usize = 4096;

/// One POP3 connection.
pub struct Session {
    router: Arc<Router>,
    config: Arc<Config>,
    peer: Option<IpAddr>,
    tls: bool,
    /// The name given by USER, waiting for PASS.
    user: Option<String>,
    auth: Option<Auth>,
    /// Messages read ahead of their RETR, by index (see `raw`).
    ahead: std::collections::HashMap<usize, Vec<u8>>,
}

/// How far RETR reads ahead: clients retrieve in order, so the next
/// messages come in one link call (up to this many, and this many bytes).
const READ_AHEAD: usize = 16;
const READ_AHEAD_BYTES: u64 = 1 << 20;

impl Session {
    /// A new connection's session.
    pub fn new(router: Arc<Router>, config: Arc<Config>, peer: Option<IpAddr>, tls: bool) -> Self {
        Session {
            router,
            config,
            peer,
            tls,
            user: None,
            auth: None,
            ahead: std::collections::HashMap::new(),
        }
    }

    /// The greeting.
    pub fn greeting(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"+OK Cofre POP3 ready\r\n");
    }

    /// Whether a client has logged in (the TRANSACTION state).
    pub fn authenticated(&self) -> bool {
        self.auth.is_some()
    }

    /// TLS is now on (after STLS).
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.user = None;
    }

    /// The connection ended (QUIT or not): the primary forgets the
    /// session, which releases the maildrop lock. Deletions are not
    /// carried out here: only QUIT does that.
    pub async fn close(&mut self) {
        if let Some(a) = self.auth.take() {
            let _ = self
                .router
                .request(&a.address, Op::Logout { session: a.session })
                .await;
        }
    }

    fn may_log_in(&self) -> bool {
        self.tls || self.config.plain_auth
    }

    fn capabilities(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"+OK capability list follows\r\n");
        let mut caps = vec![
            "TOP",
            "UIDL",
            "RESP-CODES",
            "AUTH-RESP-CODE",
            "PIPELINING",
            "EXPIRE NEVER",
            "LOGIN-DELAY 0",
            "IMPLEMENTATION Cofre",
        ];
        if self.auth.is_none() {
            if self.may_log_in() {
                caps.push("USER");
                caps.push("SASL PLAIN");
            }
            if !self.tls && self.config.stls {
                caps.push("STLS");
            }
        }
        for c in caps {
            out.extend_from_slice(c.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }

    /// Handles one command line (without its CRLF), writing the response
    /// into `out`.
    pub async fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Next {
        let line = String::from_utf8_lossy(line);
        let (verb, rest) = match line.split_once(' ') {
            Some((v, r)) => (v.to_ascii_uppercase(), r),
            None => (line.to_ascii_uppercase(), ""),
        };
        let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
        let r = if self.auth.is_none() {
            self.authorization(&verb, rest, &args, out).await
        } else {
            self.transaction(&verb, &args, out).await
        };
        match r {
            Ok(next) => next,
            Err(e) => {
                write_err(out, &e);
                Next::Continue
            }
        }
    }

    async fn authorization(
        &mut self,
        verb: &str,
        rest: &str,
        args: &[&str],
        out: &mut Vec<u8>,
    ) -> Res<Next> {
        match verb {
            "CAPA" => self.capabilities(out),
            "QUIT" => {
                out.extend_from_slice(b"+OK bye\r\n");
                return Ok(Next::Close);
            }
            "STLS" => {
                if self.tls || !self.config.stls {
                    return Err(err(None, "TLS is already active or not offered here"));
                }
                out.extend_from_slice(b"+OK begin TLS negotiation\r\n");
                return Ok(Next::StartTls);
            }
            "USER" => {
                self.check_plain_auth()?;
                // The name is everything after the space (RFC 1939 §7
                // names have no spaces; an address never does).
                let name = rest.trim();
                if name.is_empty() {
                    return Err(err(None, "USER needs a name (the full address)"));
                }
                self.user = Some(name.to_string());
                out.extend_from_slice(b"+OK send PASS\r\n");
            }
            "PASS" => {
                self.check_plain_auth()?;
                let user = self
                    .user
                    .take()
                    .ok_or_else(|| err(None, "USER comes first"))?;
                // The password is the rest of the line, spaces included.
                self.login(&user, rest.as_bytes()).await?;
                self.logged_in(out);
            }
            "AUTH" => match args {
                // A bare AUTH lists the mechanisms (a common extension).
                [] => out.extend_from_slice(b"+OK\r\nPLAIN\r\n.\r\n"),
                [mech, ..] if !mech.eq_ignore_ascii_case("PLAIN") => {
                    return Err(err(None, "only AUTH PLAIN is supported"));
                }
                [_] => {
                    self.check_plain_auth()?;
                    out.extend_from_slice(b"+ \r\n");
                    return Ok(Next::SaslContinue);
                }
                [_, initial] => {
                    self.check_plain_auth()?;
                    let initial = if *initial == "=" { "" } else { initial };
                    self.sasl_plain(initial.as_bytes()).await?;
                    self.logged_in(out);
                }
                _ => return Err(err(None, "AUTH PLAIN takes one initial response")),
            },
            "APOP" => {
                return Err(err(
                    None,
                    "APOP is not supported: use USER/PASS or AUTH PLAIN",
                ));
            }
            "" => return Err(err(None, "empty command")),
            _ => return Err(err(None, "unknown command, or not before login")),
        }
        Ok(Next::Continue)
    }

    /// The SASL response line of an AUTH without initial response.
    pub async fn auth_continue(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let r = if line == b"*" {
            Err(err(None, "authentication cancelled"))
        } else {
            self.sasl_plain(line).await
        };
        match r {
            Ok(()) => self.logged_in(out),
            Err(e) => write_err(out, &e),
        }
    }

    fn logged_in(&self, out: &mut Vec<u8>) {
        let (n, size) = self.totals();
        out.extend_from_slice(
            format!("+OK maildrop locked: {n} messages ({size} octets)\r\n").as_bytes(),
        );
    }

    fn check_plain_auth(&self) -> Res<()> {
        if self.may_log_in() {
            Ok(())
        } else {
            Err(err(
                Some("AUTH"),
                "use STLS (or the TLS port) before logging in",
            ))
        }
    }

    /// SASL PLAIN: base64 of `authzid NUL authcid NUL password`.
    async fn sasl_plain(&mut self, b64: &[u8]) -> Res<()> {
        use crate::login::PlainError;
        match crate::login::plain(b64) {
            Ok((user, pass)) => self.login(&user, &pass).await,
            Err(PlainError::NotBase64) => Err(err(None, "the SASL response is not base64")),
            Err(PlainError::Malformed) => Err(err(None, "malformed PLAIN response")),
            Err(PlainError::OtherUser) => Err(err(Some("AUTH"), "cannot act as another user")),
        }
    }

    /// Logs in, locks the maildrop and reads it.
    async fn login(&mut self, user: &str, password: &[u8]) -> Res<()> {
        use crate::login::{Attempt, LoginError};
        let attempt = Attempt {
            router: &self.router,
            limiter: &self.config.limiter,
            peer: self.peer,
            delay: self.config.failed_login_delay,
        };
        let (address, session) = match attempt.log_in(user, password).await {
            Ok(s) => s,
            Err(LoginError::Throttled(wait)) => {
                return Err(err(
                    Some("LOGIN-DELAY"),
                    format!(
                        "too many failed logins; try again in {} seconds",
                        wait.as_secs().max(1)
                    ),
                ));
            }
            Err(LoginError::Failed) => {
                return Err(err(
                    Some("AUTH"),
                    "invalid credentials (the user name is the full address)",
                ));
            }
            Err(LoginError::Link(e)) => return Err(link_error(e)),
        };
        match self.open(&address, session).await {
            Ok(auth) => {
                self.auth = Some(auth);
                Ok(())
            }
            Err(e) => {
                // Not logged in after all: the primary forgets the session.
                let _ = self.router.request(&address, Op::Logout { session }).await;
                Err(e)
            }
        }
    }

    /// Locks the maildrop and reads it: the Inbox's messages in UID
    /// order, less those retrieved before when the alias hides them.
    async fn open(&self, address: &AliasAddress, session: SessionId) -> Res<Auth> {
        let call = |op: Op| self.router.request(address, op);
        match call(Op::LockMaildrop { session }).await {
            Ok(_) => {}
            Err(ClientError::Remote(e)) if e.code == ErrorCode::AlreadyExists => {
                return Err(err(
                    Some("IN-USE"),
                    "another POP3 session holds the maildrop",
                ));
            }
            Err(e) => return Err(link_error(e)),
        }
        let settings = match call(Op::Records {
            session,
            kind: RecordKind::Setting,
        })
        .await
        .map_err(link_error)?
        {
            Reply::Records(r) => r
                .records
                .iter()
                .find(|r| r.id == settings::POP3)
                .and_then(|r| r.data.as_deref())
                .map(Pop3Settings::from_bytes)
                .transpose()
                .map_err(|e| err(Some("SYS/PERM"), e.to_string()))?
                .unwrap_or_default(),
            _ => return Err(err(Some("SYS/PERM"), "unexpected reply")),
        };
        let Reply::Folders(folders) = call(Op::Folders { session }).await.map_err(link_error)?
        else {
            return Err(err(Some("SYS/PERM"), "unexpected reply"));
        };
        let inbox = folders
            .iter()
            .find(|f| f.role == Some(Role::Inbox))
            .ok_or_else(|| err(Some("SYS/PERM"), "no Inbox"))?;
        let move_to = match &settings.move_retrieved_to {
            None => None,
            Some(name) => Some(
                folders
                    .iter()
                    .find(|f| f.name == name.as_str())
                    .map(|f| f.id)
                    .ok_or_else(|| {
                        err(
                            Some("SYS/PERM"),
                            format!(
                                "the folder for retrieved mail ({}) does not exist",
                                name.as_str()
                            ),
                        )
                    })?,
            ),
        };
        let Reply::FolderIndex(index) = call(Op::FolderIndex {
            session,
            folder: inbox.id,
        })
        .await
        .map_err(link_error)?
        else {
            return Err(err(Some("SYS/PERM"), "unexpected reply"));
        };
        let mut items = Vec::with_capacity(index.len());
        // Sizes (and marks) in slices, so a large Inbox is not one reply.
        for chunk in index.chunks(2000) {
            let emails: Vec<EmailId> = chunk.iter().map(|(_, e)| *e).collect();
            let Reply::Summaries(sums) = call(Op::Summaries { session, emails })
                .await
                .map_err(link_error)?
            else {
                return Err(err(Some("SYS/PERM"), "unexpected reply"));
            };
            for (uid, email) in chunk {
                let Some(s) = sums.iter().find(|s| s.id == *email) else {
                    continue;
                };
                let hidden = settings.hide_retrieved
                    && s.keywords.iter().any(|k| k.as_str() == RETRIEVED_KEYWORD);
                if !hidden {
                    items.push(Item {
                        uid: uid.get(),
                        email: *email,
                        size: s.size,
                        deleted: false,
                        retrieved: false,
                    });
                }
            }
        }
        Ok(Auth {
            address: address.clone(),
            session,
            inbox: inbox.id,
            uid_validity: inbox.uid_validity,
            items,
            settings,
            move_to,
        })
    }

    /// Messages and octets not marked deleted.
    fn totals(&self) -> (usize, u64) {
        self.auth.as_ref().map_or((0, 0), |a| {
            a.items
                .iter()
                .filter(|i| !i.deleted)
                .fold((0, 0), |(n, s), i| (n + 1, s + i.size))
        })
    }

    /// The message a number names (1-based), if not deleted.
    fn item(&self, arg: Option<&&str>) -> Res<(usize, Item)> {
        let a = self
            .auth
            .as_ref()
            .ok_or_else(|| err(None, "log in first"))?;
        let n: usize = arg
            .ok_or_else(|| err(None, "a message number is required"))?
            .parse()
            .map_err(|_| err(None, "a message number is a positive integer"))?;
        match n.checked_sub(1).and_then(|i| a.items.get(i)) {
            Some(item) if !item.deleted => Ok((n, *item)),
            Some(_) => Err(err(None, format!("message {n} is marked deleted"))),
            None => Err(err(None, format!("no message {n}"))),
        }
    }

    /// A message's UIDL: the Inbox's UIDVALIDITY and the message's IMAP
    /// UID, stable across sessions and protocols.
    fn uidl(&self, item: &Item) -> String {
        let v = self.auth.as_ref().map_or(0, |a| a.uid_validity);
        format!("{v}.{}", item.uid)
    }

    /// Message `index`'s bytes. For RETR (`ahead`), the next messages not
    /// marked deleted come in the same link call and wait here for their
    /// own RETR.
    async fn raw(&mut self, index: usize, ahead: bool) -> Res<Vec<u8>> {
        if let Some(r) = self.ahead.remove(&index) {
            return Ok(r);
        }
        let a = self
            .auth
            .as_ref()
            .ok_or_else(|| err(None, "log in first"))?;
        let mut batch = vec![index];
        let mut bytes = a.items[index].size;
        if ahead {
            for (i, item) in a.items.iter().enumerate().skip(index + 1) {
                if batch.len() >= READ_AHEAD || bytes + item.size > READ_AHEAD_BYTES {
                    break;
                }
                if !item.deleted {
                    batch.push(i);
                    bytes += item.size;
                }
            }
        }
        let emails = batch.iter().map(|&i| a.items[i].email).collect();
        let op = Op::Raws {
            session: a.session,
            emails,
        };
        let raws = match self.router.request(&a.address, op).await {
            Ok(Reply::Raws(r)) if r.len() == batch.len() => r,
            Ok(_) => return Err(err(Some("SYS/PERM"), "unexpected reply")),
            Err(e) => return Err(link_error(e)),
        };
        if ahead {
            self.ahead.clear();
        }
        let mut first = None;
        for (i, raw) in batch.into_iter().zip(raws) {
            match (i == index, raw) {
                (true, r) => first = r,
                (false, Some(r)) => {
                    self.ahead.insert(i, r);
                }
                (false, None) => {}
            }
        }
        first.ok_or_else(|| err(None, "the message was removed by another client"))
    }

    async fn transaction(&mut self, verb: &str, args: &[&str], out: &mut Vec<u8>) -> Res<Next> {
        let extra = |want: usize| -> Res<()> {
            if args.len() > want {
                Err(err(None, format!("{verb} takes at most {want} arguments")))
            } else {
                Ok(())
            }
        };
        match verb {
            "CAPA" => self.capabilities(out),
            "NOOP" => {
                extra(0)?;
                out.extend_from_slice(b"+OK\r\n");
            }
            "STAT" => {
                extra(0)?;
                let (n, size) = self.totals();
                out.extend_from_slice(format!("+OK {n} {size}\r\n").as_bytes());
            }
            "LIST" | "UIDL" => {
                extra(1)?;
                let line = |s: &Session, n: usize, i: &Item| -> String {
                    if verb == "LIST" {
                        format!("{n} {}", i.size)
                    } else {
                        format!("{n} {}", s.uidl(i))
                    }
                };
                if args.is_empty() {
                    let (count, size) = self.totals();
                    out.extend_from_slice(
                        format!("+OK {count} messages ({size} octets)\r\n").as_bytes(),
                    );
                    let a = self
                        .auth
                        .as_ref()
                        .ok_or_else(|| err(None, "log in first"))?;
                    for (i, item) in a.items.iter().enumerate().filter(|(_, i)| !i.deleted) {
                        out.extend_from_slice(line(self, i + 1, item).as_bytes());
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b".\r\n");
                } else {
                    let (n, item) = self.item(args.first())?;
                    out.extend_from_slice(format!("+OK {}\r\n", line(self, n, &item)).as_bytes());
                }
            }
            "RETR" => {
                extra(1)?;
                let (n, item) = self.item(args.first())?;
                let raw = self.raw(n - 1, true).await?;
                out.extend_from_slice(format!("+OK {} octets\r\n", item.size).as_bytes());
                stuff(&raw, None, out);
                if let Some(a) = self.auth.as_mut() {
                    a.items[n - 1].retrieved = true;
                }
            }
            "TOP" => {
                extra(2)?;
                let (n, _) = self.item(args.first())?;
                let lines: usize = args
                    .get(1)
                    .ok_or_else(|| err(None, "TOP needs a message number and a line count"))?
                    .parse()
                    .map_err(|_| err(None, "the line count is a non-negative integer"))?;
                let raw = match self.ahead.get(&(n - 1)) {
                    Some(r) => r.clone(),
                    None => self.raw(n - 1, false).await?,
                };
                out.extend_from_slice(b"+OK top of message follows\r\n");
                stuff(&raw, Some(lines), out);
            }
            "DELE" => {
                extra(1)?;
                let (n, _) = self.item(args.first())?;
                if let Some(a) = self.auth.as_mut() {
                    a.items[n - 1].deleted = true;
                }
                out.extend_from_slice(format!("+OK message {n} deleted\r\n").as_bytes());
            }
            "RSET" => {
                extra(0)?;
                if let Some(a) = self.auth.as_mut() {
                    for i in &mut a.items {
                        i.deleted = false;
                    }
                }
                let (n, size) = self.totals();
                out.extend_from_slice(
                    format!("+OK maildrop has {n} messages ({size} octets)\r\n").as_bytes(),
                );
            }
            "QUIT" => {
                extra(0)?;
                let r = self.update().await;
                self.close().await;
                match r {
                    Ok(()) => out.extend_from_slice(b"+OK bye\r\n"),
                    Err(e) => write_err(out, &e),
                }
                return Ok(Next::Close);
            }
            "USER" | "PASS" | "AUTH" | "APOP" | "STLS" => {
                return Err(err(None, "already logged in"));
            }
            "" => return Err(err(None, "empty command")),
            _ => return Err(err(None, "unknown command")),
        }
        Ok(Next::Continue)
    }

    /// The UPDATE state (RFC 1939 §6): the session's deletions, marks and
    /// moves, in one transaction.
    async fn update(&mut self) -> Res<()> {
        let Some(a) = self.auth.as_ref() else {
            return Ok(());
        };
        let uid = |i: &Item| Uid::try_from(i.uid).ok();
        let deleted: Vec<Uid> = a
            .items
            .iter()
            .filter(|i| i.deleted)
            .filter_map(uid)
            .collect();
        let retrieved: Vec<Uid> = a
            .items
            .iter()
            .filter(|i| i.retrieved && !i.deleted)
            .filter_map(uid)
            .collect();
        // Retrieved mail is read; it is marked for hiding when the alias
        // hides it.
        let mut keywords = vec![Keyword::try_from("$seen").map_err(|e| err(None, e.to_string()))?];
        if a.settings.hide_retrieved {
            keywords
                .push(Keyword::try_from(RETRIEVED_KEYWORD).map_err(|e| err(None, e.to_string()))?);
        }
        if deleted.is_empty() && retrieved.is_empty() {
            return Ok(());
        }
        let op = Op::Pop3Commit {
            session: a.session,
            folder: a.inbox,
            deleted,
            retrieved,
            keywords,
            move_to: a.move_to,
        };
        match self.router.request(&a.address, op).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let mut e = link_error(e);
                e.text = format!("some deleted messages not removed: {}", e.text);
                Err(e)
            }
        }
    }
}

fn write_err(out: &mut Vec<u8>, e: &Err) {
    out.extend_from_slice(b"-ERR ");
    if let Some(c) = e.code {
        out.push(b'[');
        out.extend_from_slice(c.as_bytes());
        out.extend_from_slice(b"] ");
    }
    out.extend_from_slice(e.text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A message as a multi-line response (RFC 1939 §3): every line ends in
/// CRLF (a bare LF or CR is sent as CRLF), a line starting with "." gets
/// one more, and ".\r\n" ends it. With `top`, the header, the blank line
/// and that many body lines.
pub fn stuff(raw: &[u8], top: Option<usize>, out: &mut Vec<u8>) {
    out.reserve(raw.len() + raw.len() / 64 + 5);
    let mut in_body = false;
    let mut body_lines = 0usize;
    let mut rest = raw;
    while !rest.is_empty() {
        if in_body && top.is_some_and(|t| body_lines >= t) {
            break;
        }
        let (line, next) = match rest.iter().position(|&c| c == b'\n' || c == b'\r') {
            Some(p) => {
                let after = match (rest[p], rest.get(p + 1)) {
                    (b'\r', Some(b'\n')) => p + 2,
                    _ => p + 1,
                };
                (&rest[..p], &rest[after..])
            }
            None => (rest, &rest[rest.len()..]),
        };
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        if in_body {
            body_lines += 1;
        } else if line.is_empty() {
            in_body = true;
        }
        rest = next;
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::stuff;

    fn s(raw: &[u8], top: Option<usize>) -> Vec<u8> {
        let mut out = Vec::new();
        stuff(raw, top, &mut out);
        out
    }

    #[test]
    fn dot_stuffing_and_line_endings() {
        assert_eq!(
            s(b"A: b\r\n\r\n.hi\r\n..\r\nx", None),
            b"A: b\r\n\r\n..hi\r\n...\r\nx\r\n.\r\n"
        );
        assert_eq!(
            s(b"A: b\n\nbare\rcr\n", None),
            b"A: b\r\n\r\nbare\r\ncr\r\n.\r\n"
        );
        assert_eq!(s(b"", None), b".\r\n");
        assert_eq!(s(b".\r\n", None), b"..\r\n.\r\n");
    }

    #[test]
    fn top_sends_the_header_and_n_body_lines() {
        let m = b"A: b\r\nC: d\r\n\r\none\r\n.two\r\nthree\r\n";
        assert_eq!(s(m, Some(0)), b"A: b\r\nC: d\r\n\r\n.\r\n");
        assert_eq!(s(m, Some(2)), b"A: b\r\nC: d\r\n\r\none\r\n..two\r\n.\r\n");
        assert_eq!(s(m, Some(99)), s(m, None));
    }
}
