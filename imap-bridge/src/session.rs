//! One IMAP connection's protocol state: commands in, response bytes out.
//!
//! A [`Session`] holds no mail. It turns each [`Command`] into calls over
//! the link and writes the responses into a buffer; the connection loop in
//! `server.rs` owns the socket. So a session can be driven from bytes in
//! tests, with an in-process primary behind it.
//!
//! The selected mailbox's view ([`Selected`]) is the client's idea of
//! message sequence numbers: it changes only when the client is told, by
//! untagged EXISTS/EXPUNGE/VANISHED responses at the moments RFC 9051
//! §7.5.1 allows. What changed on the primary is learned from the link's
//! change events and asked for with `FolderChanges` since a MODSEQ.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cofre_storage::link::route::Router;
use cofre_storage::link::ws::ClientError;
use cofre_storage::link::{ErrorCode, Event, Op, Reply};
use cofre_storage::mailbox::{
    AppendOptions, EmailSummary, Filter, Folder, Query, Sort, SortKey, TextField,
};
use cofre_storage::primary::SessionId;
use cofre_storage::throttle::LoginLimiter;
use cofre_storage::types::{Day, EmailId, FolderId, FolderName, ModSeq, Role, Uid};
use cofre_storage::{AliasAddress, Keyword};
use tokio::sync::broadcast;

use crate::parse::{
    Body, Command, FetchItem, Flag, ListOptions, SearchKey, SearchReturn, SeqSet, SortCriterion,
    StatusItem, StoreMode,
};
use crate::{mutf7, render};

/// Settings every session of a listener shares.
pub struct Config {
    /// The largest message APPEND takes (APPENDLIMIT), in bytes.
    pub append_limit: u64,
    /// Whether LOGIN and AUTHENTICATE are allowed without TLS (loopback).
    pub plain_auth: bool,
    /// Whether STARTTLS is offered.
    pub starttls: bool,
    /// Pause after a failed login.
    pub failed_login_delay: Duration,
    /// Failed-login throttling, shared with the other front ends.
    pub limiter: Arc<LoginLimiter>,
}

/// What the connection loop does after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Read the next command.
    Continue,
    /// Close the connection (after writing what is buffered).
    Close,
    /// Start TLS, then read the next command.
    StartTls,
    /// Enter IDLE: wait for `DONE` or news; then `finish_idle`.
    Idle(String),
    /// Read one SASL response line, then `authenticate_continue`.
    SaslContinue(String),
    /// Start DEFLATE compression after the buffered OK.
    Compress,
}

/// A refused or failed command: `NO [code] text`, or `BAD text`.
struct No {
    bad: bool,
    code: Option<&'static str>,
    text: String,
}

type Res<T> = Result<T, No>;

/// A command that succeeded: what comes next, and the tagged OK's code
/// and text.
pub(crate) struct Done {
    next: Next,
    code: Option<String>,
    text: &'static str,
}

fn done(text: &'static str) -> Res<Done> {
    Ok(Done {
        next: Next::Continue,
        code: None,
        text,
    })
}

fn done_with(code: String, text: &'static str) -> Res<Done> {
    Ok(Done {
        next: Next::Continue,
        code: Some(code),
        text,
    })
}

fn no(code: Option<&'static str>, text: impl Into<String>) -> No {
    No {
        bad: false,
        code,
        text: text.into(),
    }
}

fn bad(text: impl Into<String>) -> No {
    No {
        bad: true,
        code: None,
        text: text.into(),
    }
}

fn link_error(e: ClientError) -> No {
    match e {
        ClientError::Remote(e) => {
            let code = match e.code {
                ErrorCode::NotFound => Some("NONEXISTENT"),
                ErrorCode::AlreadyExists => Some("ALREADYEXISTS"),
                ErrorCode::OverQuota => Some("OVERQUOTA"),
                ErrorCode::TooLarge => Some("TOOBIG"),
                ErrorCode::Invalid => Some("CANNOT"),
                ErrorCode::WrongPassword => Some("AUTHENTICATIONFAILED"),
                ErrorCode::NoSession | ErrorCode::Unavailable | ErrorCode::Internal => {
                    Some("UNAVAILABLE")
                }
            };
            no(code, e.message)
        }
        ClientError::LinkDown(_) | ClientError::Refused(_) => no(
            Some("UNAVAILABLE"),
            "the mail store is unreachable; try again shortly",
        ),
    }
}

/// One message of the selected mailbox, at its sequence number's index.
#[derive(Debug, Clone, Copy)]
struct Msg {
    uid: u32,
    email: EmailId,
    /// The MODSEQ of the last change the client was told about.
    modseq: ModSeq,
}

/// The selected mailbox as the client knows it.
struct Selected {
    id: FolderId,
    /// Its storage name when selected.
    name: String,
    uid_validity: u32,
    read_only: bool,
    msgs: Vec<Msg>,
    /// Changes up to here are reflected in `msgs` (or pending below).
    modseq: ModSeq,
    /// Expunged on the primary, not yet told to the client.
    gone: HashSet<u32>,
}

impl Selected {
    fn position(&self, uid: u32) -> Option<usize> {
        self.msgs.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    fn max_uid(&self) -> u32 {
        self.msgs.last().map_or(0, |m| m.uid)
    }

    /// Indexes (0-based) of the messages a set names, ascending.
    fn resolve(&self, set: &SeqSet, uid: bool) -> Res<Vec<usize>> {
        let mut out = Vec::new();
        if uid {
            for (lo, hi) in set.ranges(self.max_uid()) {
                let start = self.msgs.partition_point(|m| m.uid < lo);
                for (i, m) in self.msgs.iter().enumerate().skip(start) {
                    if m.uid > hi {
                        break;
                    }
                    out.push(i);
                }
            }
        } else {
            let n = self.msgs.len() as u32;
            if n == 0 {
                // `1:*` on an empty mailbox names nothing, and is no error.
                return Ok(out);
            }
            for (lo, hi) in set.ranges(n) {
                if lo == 0 || hi > n {
                    return Err(bad("no such message sequence number"));
                }
                out.extend((lo - 1) as usize..hi as usize);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

struct Auth {
    address: AliasAddress,
    session: SessionId,
}

/// One connection's IMAP state.
pub struct Session {
    router: Arc<Router>,
    config: Arc<Config>,
    peer: Option<IpAddr>,
    tls: bool,
    auth: Option<Auth>,
    utf8: bool,
    condstore: bool,
    qresync: bool,
    selected: Option<Selected>,
    events: broadcast::Receiver<Event>,
    news: bool,
    /// The view gained messages the client has not been told of (EXISTS).
    exists_changed: bool,
    /// COMPRESS=DEFLATE is on.
    compressed: bool,
    /// A BYE went out: the connection ends after this command.
    closing: bool,
    /// The primary no longer knows this session.
    lost: std::sync::atomic::AtomicBool,
}

const CAPS_COMMON: &str = "IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE";
const CAPS_AUTHED: &str = "IDLE NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN SPECIAL-USE \
    LIST-EXTENDED LIST-STATUS STATUS=SIZE CONDSTORE QRESYNC ESEARCH SORT \
    THREAD=ORDEREDSUBJECT THREAD=REFERENCES QUOTA QUOTA=RES-STORAGE UTF8=ACCEPT \
    MULTIAPPEND BINARY OBJECTID COMPRESS=DEFLATE";

const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

impl Session {
    /// A new connection's session.
    pub fn new(router: Arc<Router>, config: Arc<Config>, peer: Option<IpAddr>, tls: bool) -> Self {
        let events = router.events();
        Session {
            router,
            config,
            peer,
            tls,
            auth: None,
            utf8: false,
            condstore: false,
            qresync: false,
            selected: None,
            events,
            news: false,
            exists_changed: false,
            compressed: false,
            closing: false,
            lost: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The greeting.
    pub fn greeting(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            format!(
                "* OK [CAPABILITY {}] Cofre IMAP ready\r\n",
                self.capabilities()
            )
            .as_bytes(),
        );
    }

    /// Whether a client has logged in.
    pub fn authenticated(&self) -> bool {
        self.auth.is_some()
    }

    /// TLS is now on (after STARTTLS).
    pub fn tls_started(&mut self) {
        self.tls = true;
    }

    fn capabilities(&self) -> String {
        let mut c = CAPS_COMMON.to_string();
        if self.auth.is_none() {
            if !self.tls && self.config.starttls {
                c.push_str(" STARTTLS");
            }
            if self.tls || self.config.plain_auth {
                c.push_str(" AUTH=PLAIN");
            } else {
                c.push_str(" LOGINDISABLED");
            }
        } else {
            c.push(' ');
            c.push_str(CAPS_AUTHED);
            c.push_str(&format!(" APPENDLIMIT={}", self.config.append_limit));
        }
        c
    }

    /// The session ends: the primary forgets it.
    pub async fn close(&mut self) {
        if let Some(a) = self.auth.take() {
            let _ = self
                .router
                .request(&a.address, Op::Logout { session: a.session })
                .await;
        }
    }

    /// Waits until the primary reports a change to this alias's mailbox.
    pub async fn wait_for_news(&mut self) {
        let Some(me) = self.auth.as_ref().map(|a| a.address.clone()) else {
            return std::future::pending().await;
        };
        loop {
            match self.events.recv().await {
                Ok(Event::Changed(c)) if c.address == me && c.modseq > self.known() => {
                    self.news = true;
                    return;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.news = true;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return std::future::pending().await;
                }
            }
        }
    }

    /// The MODSEQ up to which the selected mailbox's view is current.
    fn known(&self) -> ModSeq {
        self.selected.as_ref().map_or(0, |s| s.modseq)
    }

    /// After this session's own write at `modseq`: if nothing else was
    /// written since the view was current, the view is current at
    /// `modseq` and no `FolderChanges` round trip is needed.
    fn own_write(&mut self, modseq: ModSeq) -> bool {
        match self.selected.as_mut() {
            Some(sel) if modseq == sel.modseq + 1 => {
                sel.modseq = modseq;
                true
            }
            _ => false,
        }
    }

    fn drain_events(&mut self) {
        let Some(me) = self.auth.as_ref().map(|a| a.address.clone()) else {
            return;
        };
        let me = &me;
        loop {
            match self.events.try_recv() {
                Ok(Event::Changed(c)) => self.news |= &c.address == me && c.modseq > self.known(),
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.news = true,
                Err(_) => return,
            }
        }
    }

    async fn call(&self, op: Op) -> Res<Reply> {
        let a = self.auth.as_ref().ok_or_else(|| bad("log in first"))?;
        let r = self.router.request(&a.address, op).await;
        if let Err(ClientError::Remote(e)) = &r
            && e.code == ErrorCode::NoSession
        {
            // The primary forgot the session (it restarted): the client
            // must log in again, so this connection ends.
            self.lost.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r.map_err(link_error)
    }

    fn sid(&self) -> Res<SessionId> {
        self.auth
            .as_ref()
            .map(|a| a.session)
            .ok_or_else(|| bad("log in first"))
    }

    /// Handles one command, writing every response into `out`.
    pub async fn command(&mut self, cmd: Command, out: &mut Vec<u8>) -> Next {
        let Command { tag, body } = cmd;
        let kind = command_kind(&body);
        let result = self.dispatch(&tag, body, out).await;
        let next = match result {
            Ok(Done { next, code, text }) => {
                // Pending updates go before the tagged OK.
                if self.selected.is_some() && !matches!(next, Next::Idle(_)) {
                    self.sync(out, kind.expunge_allowed).await;
                }
                match next {
                    Next::Idle(_) | Next::SaslContinue(_) => {}
                    _ => {
                        out.extend_from_slice(tag.as_bytes());
                        out.extend_from_slice(b" OK ");
                        if let Some(c) = code {
                            out.push(b'[');
                            out.extend_from_slice(c.as_bytes());
                            out.extend_from_slice(b"] ");
                        }
                        out.extend_from_slice(text.as_bytes());
                        out.extend_from_slice(b"\r\n");
                    }
                }
                next
            }
            Err(e) => {
                write_no(out, &tag, &e);
                Next::Continue
            }
        };
        if self.lost.load(std::sync::atomic::Ordering::Relaxed) && !self.closing {
            out.extend_from_slice(
                b"* BYE [UNAVAILABLE] the session ended on the server; log in again\r\n",
            );
            self.closing = true;
        }
        if self.closing { Next::Close } else { next }
    }

    /// Whether the session said BYE and the connection must end.
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Answers a command that could not be parsed.
    pub fn parse_error(&self, tag: Option<&str>, message: &str, out: &mut Vec<u8>) {
        let (code, text) = match message.strip_prefix("BADCHARSET:") {
            Some(_) => (" [BADCHARSET (UTF-8 US-ASCII)]", "unsupported charset"),
            None => ("", message),
        };
        let tag = tag.unwrap_or("*");
        if code.is_empty() {
            out.extend_from_slice(format!("{tag} BAD {text}\r\n").as_bytes());
        } else {
            out.extend_from_slice(format!("{tag} NO{code} {text}\r\n").as_bytes());
        }
    }

    /// Ends IDLE: the client sent `line` (which should be DONE).
    pub async fn finish_idle(&mut self, tag: &str, line: &[u8], out: &mut Vec<u8>) {
        self.sync(out, true).await;
        if line.eq_ignore_ascii_case(b"DONE") {
            out.extend_from_slice(format!("{tag} OK IDLE terminated\r\n").as_bytes());
        } else {
            out.extend_from_slice(format!("{tag} BAD expected DONE\r\n").as_bytes());
        }
    }

    /// During IDLE: tells the client what changed.
    pub async fn idle_news(&mut self, out: &mut Vec<u8>) {
        self.sync(out, true).await;
    }

    /// The SASL response line of an AUTHENTICATE without initial response.
    pub async fn authenticate_continue(&mut self, tag: &str, line: &[u8], out: &mut Vec<u8>) {
        let r = if line == b"*" {
            Err(bad("authentication cancelled"))
        } else {
            self.sasl_plain(line).await
        };
        match r {
            Ok(()) => out.extend_from_slice(
                format!(
                    "{tag} OK [CAPABILITY {}] logged in\r\n",
                    self.capabilities()
                )
                .as_bytes(),
            ),
            Err(e) => write_no(out, tag, &e),
        }
    }

    async fn dispatch(&mut self, tag: &str, body: Body, out: &mut Vec<u8>) -> Res<Done> {
        // Commands valid in any state.
        match body {
            Body::Capability => {
                out.extend_from_slice(
                    format!("* CAPABILITY {}\r\n", self.capabilities()).as_bytes(),
                );
                return done("CAPABILITY completed");
            }
            Body::Noop => {
                // NOOP is how clients without IDLE poll: always ask.
                self.news |= self.selected.is_some();
                return done("NOOP completed");
            }
            Body::Logout => {
                out.extend_from_slice(b"* BYE logging out\r\n");
                self.close().await;
                return Ok(Done {
                    next: Next::Close,
                    code: None,
                    text: "LOGOUT completed",
                });
            }
            Body::Id(_) => {
                out.extend_from_slice(b"* ID (\"name\" \"Cofre\")\r\n");
                return done("ID completed");
            }
            _ => {}
        }
        if self.auth.is_none() {
            return match body {
                Body::StartTls => {
                    if self.tls || !self.config.starttls {
                        Err(bad("TLS is already active or not offered here"))
                    } else {
                        Ok(Done {
                            next: Next::StartTls,
                            code: None,
                            text: "begin TLS negotiation now",
                        })
                    }
                }
                Body::Login { user, password } => {
                    self.check_plain_auth()?;
                    self.login(&user, &password).await?;
                    done_with(format!("CAPABILITY {}", self.capabilities()), "logged in")
                }
                Body::Authenticate { mechanism, initial } => {
                    self.check_plain_auth()?;
                    if mechanism != "PLAIN" {
                        return Err(no(None, "only AUTHENTICATE PLAIN is supported"));
                    }
                    match initial {
                        Some(ir) => {
                            self.sasl_plain(ir.as_bytes()).await?;
                            done_with(format!("CAPABILITY {}", self.capabilities()), "logged in")
                        }
                        None => {
                            out.extend_from_slice(b"+ \r\n");
                            Ok(Done {
                                next: Next::SaslContinue(tag.to_string()),
                                code: None,
                                text: "",
                            })
                        }
                    }
                }
                _ => Err(bad("log in first")),
            };
        }
        match body {
            Body::StartTls | Body::Login { .. } | Body::Authenticate { .. } => {
                Err(bad("already logged in"))
            }
            Body::Enable(caps) => {
                if self.selected.is_some() {
                    return Err(bad("ENABLE is valid only before SELECT"));
                }
                let mut on = Vec::new();
                for c in caps {
                    match c.as_str() {
                        "UTF8=ACCEPT" => {
                            self.utf8 = true;
                            on.push(c);
                        }
                        "CONDSTORE" => {
                            self.condstore = true;
                            on.push(c);
                        }
                        "QRESYNC" => {
                            self.qresync = true;
                            self.condstore = true;
                            on.push(c);
                        }
                        "IMAP4REV2" => on.push(c),
                        _ => {}
                    }
                }
                out.extend_from_slice(format!("* ENABLED {}\r\n", on.join(" ")).as_bytes());
                done("ENABLE completed")
            }
            Body::Namespace => {
                out.extend_from_slice(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                done("NAMESPACE completed")
            }
            Body::Create(name) => {
                let name = self.storage_name(&name)?;
                let name = name.trim_end_matches('/').to_string();
                let folder = FolderName::try_from(name.as_str())
                    .map_err(|e| no(Some("CANNOT"), e.to_string()))?;
                if self.find(&folder).await?.is_some() {
                    return Err(no(Some("ALREADYEXISTS"), "mailbox exists"));
                }
                self.call(Op::CreateFolder {
                    session: self.sid()?,
                    name: folder,
                })
                .await?;
                done("CREATE completed")
            }
            Body::Delete(name) => {
                let f = self.existing(&name).await?;
                if f.role == Some(Role::Inbox) {
                    return Err(no(Some("CANNOT"), "INBOX cannot be deleted"));
                }
                let all = self.folders().await?;
                let prefix = format!("{}/", f.name);
                if all.iter().any(|c| c.name.starts_with(&prefix)) {
                    return Err(no(
                        Some("HASCHILDREN"),
                        "delete the mailbox's children first",
                    ));
                }
                if self.selected.as_ref().is_some_and(|s| s.id == f.id) {
                    self.selected = None;
                }
                self.call(Op::DeleteFolder {
                    session: self.sid()?,
                    folder: f.id,
                })
                .await?;
                done("DELETE completed")
            }
            Body::Rename(from, to) => {
                let f = self.existing(&from).await?;
                let to = self.storage_name(&to)?;
                let to_name = FolderName::try_from(to.as_str())
                    .map_err(|e| no(Some("CANNOT"), e.to_string()))?;
                if self.find(&to_name).await?.is_some() {
                    return Err(no(Some("ALREADYEXISTS"), "target mailbox exists"));
                }
                if f.role == Some(Role::Inbox) {
                    // RFC 9051: renaming INBOX moves its messages to the new
                    // mailbox and leaves INBOX empty.
                    let created = self
                        .call(Op::CreateFolder {
                            session: self.sid()?,
                            name: to_name,
                        })
                        .await?;
                    let Reply::Folder(target) = created else {
                        return Err(no(Some("SERVERBUG"), "unexpected reply"));
                    };
                    let uids = self.folder_uids(f.id).await?;
                    if !uids.is_empty() {
                        self.call(Op::Move {
                            session: self.sid()?,
                            from: f.id,
                            uids,
                            to: target.id,
                        })
                        .await?;
                    }
                } else {
                    self.call(Op::RenameFolder {
                        session: self.sid()?,
                        folder: f.id,
                        name: to_name,
                    })
                    .await?;
                }
                done("RENAME completed")
            }
            Body::Subscribe(name) => {
                // Only existing mailboxes can be subscribed: subscription
                // is a property of the folder.
                let f = self.existing(&name).await?;
                self.call(Op::Subscribe {
                    session: self.sid()?,
                    folder: f.id,
                    subscribed: true,
                })
                .await?;
                done("SUBSCRIBE completed")
            }
            Body::Unsubscribe(name) => {
                let f = self.existing(&name).await?;
                self.call(Op::Subscribe {
                    session: self.sid()?,
                    folder: f.id,
                    subscribed: false,
                })
                .await?;
                done("UNSUBSCRIBE completed")
            }
            Body::List {
                reference,
                patterns,
                options,
            } => {
                self.list(&reference, &patterns, &options, out).await?;
                done("LIST completed")
            }
            Body::Lsub { reference, pattern } => {
                let options = ListOptions {
                    subscribed: true,
                    ..ListOptions::default()
                };
                self.list_inner(&reference, &[pattern], &options, true, out)
                    .await?;
                done("LSUB completed")
            }
            Body::Status { mailbox, items } => {
                let f = self.existing(&mailbox).await?;
                self.status(&f, &items, out).await?;
                done("STATUS completed")
            }
            Body::Select {
                mailbox,
                read_only,
                condstore,
                qresync,
            } => {
                if qresync.is_some() && !self.qresync {
                    return Err(bad("ENABLE QRESYNC first"));
                }
                if condstore {
                    self.condstore = true;
                }
                if self.selected.take().is_some() {
                    // RFC 9051 §6.3.2: the previous mailbox is closed first.
                    out.extend_from_slice(b"* OK [CLOSED] previous mailbox closed\r\n");
                }
                let f = self.existing(&mailbox).await?;
                let code = self.select(f, read_only, qresync, out).await?;
                done_with(
                    code.into(),
                    if read_only {
                        "EXAMINE completed"
                    } else {
                        "SELECT completed"
                    },
                )
            }
            Body::Append { mailbox, messages } => {
                let code = self.append(&mailbox, messages).await?;
                done_with(code, "APPEND completed")
            }
            Body::GetQuotaRoot(name) => {
                self.existing(&name).await?;
                let mut w = Vec::new();
                w.extend_from_slice(b"* QUOTAROOT ");
                self.write_name(&mut w, &name);
                w.extend_from_slice(b" \"\"\r\n");
                out.extend_from_slice(&w);
                self.quota(out).await?;
                done("GETQUOTAROOT completed")
            }
            Body::GetQuota(root) => {
                if !root.is_empty() {
                    return Err(no(Some("NONEXISTENT"), "the only quota root is \"\""));
                }
                self.quota(out).await?;
                done("GETQUOTA completed")
            }
            Body::SetQuota => Err(no(Some("NOPERM"), "quotas are set by the operator")),
            Body::Compress(mechanism) => {
                if self.compressed {
                    Err(no(Some("COMPRESSIONACTIVE"), "compression is already on"))
                } else if mechanism != "DEFLATE" {
                    Err(bad("only DEFLATE is supported"))
                } else {
                    self.compressed = true;
                    Ok(Done {
                        next: Next::Compress,
                        code: None,
                        text: "DEFLATE active",
                    })
                }
            }
            Body::Idle => {
                out.extend_from_slice(b"+ idling\r\n");
                Ok(Done {
                    next: Next::Idle(tag.to_string()),
                    code: None,
                    text: "",
                })
            }
            other => self.selected_command(other, out).await,
        }
    }
}

/// Where in RFC 9051 §7.5.1's rules a command falls.
struct Kind {
    expunge_allowed: bool,
}

fn command_kind(b: &Body) -> Kind {
    let expunge_allowed = !matches!(
        b,
        Body::Fetch { uid: false, .. }
            | Body::Store { uid: false, .. }
            | Body::Search { uid: false, .. }
            | Body::Sort { uid: false, .. }
            | Body::Thread { uid: false, .. }
    );
    Kind { expunge_allowed }
}

fn write_no(out: &mut Vec<u8>, tag: &str, e: &No) {
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(if e.bad { b" BAD " } else { b" NO " });
    if let Some(c) = e.code {
        out.push(b'[');
        out.extend_from_slice(c.as_bytes());
        out.extend_from_slice(b"] ");
    }
    // Never let a message break the line.
    let text: String = e
        .text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}
mod folders;
mod selected;
