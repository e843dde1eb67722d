//! Reading emails: exact raw bytes, header summaries, MIME structure and
//! single body parts.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use mail_parser::{MessageParser, MessagePart as ParserPart, MimeHeaders, PartType};
use rusqlite::{OptionalExtension, params};

use super::append::decode_addrs;
use super::parse::Addr;
use super::{Mailbox, id_list};
use crate::error::{Error, Result};
use crate::time;
use crate::types::{EmailId, FolderId, Keyword, ModSeq, ThreadId, Uid};

/// The header summary of an email: what a message list shows.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EmailSummary {
    /// The email.
    pub id: EmailId,
    /// Its thread.
    pub thread_id: ThreadId,
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    /// In-Reply-To ids.
    pub in_reply_to: Vec<String>,
    /// References ids.
    pub references: Vec<String>,
    /// Decoded subject.
    pub subject: String,
    /// From.
    pub from: Vec<Addr>,
    /// Sender.
    pub sender: Vec<Addr>,
    /// Reply-To.
    pub reply_to: Vec<Addr>,
    /// To.
    pub to: Vec<Addr>,
    /// Cc.
    pub cc: Vec<Addr>,
    /// Bcc.
    pub bcc: Vec<Addr>,
    /// Date header, UTC Unix seconds.
    pub sent_at: Option<i64>,
    /// Internal date, UTC Unix seconds.
    pub received_at: i64,
    /// Size of the raw message in bytes.
    pub size: u64,
    /// Whether it has attachments.
    pub has_attachment: bool,
    /// Start of the body text.
    pub preview: String,
    /// Keywords, sorted.
    pub keywords: Vec<Keyword>,
    /// The folders it is in, with its UID in each.
    pub folders: Vec<(FolderId, Uid)>,
    /// MODSEQ of its last change.
    pub modseq: ModSeq,
}

impl EmailSummary {
    /// The summary of bytes that are not stored (JMAP `Email/parse`): no
    /// id, thread, folders or keywords; received now.
    pub fn of_raw(raw: &[u8]) -> EmailSummary {
        let a = super::parse::analyse(raw);
        EmailSummary {
            id: EmailId(0),
            thread_id: ThreadId(0),
            message_id: a.message_id,
            in_reply_to: a.in_reply_to,
            references: a.references,
            subject: a.subject,
            from: a.from,
            sender: a.sender,
            reply_to: a.reply_to,
            to: a.to,
            cc: a.cc,
            bcc: a.bcc,
            sent_at: a.sent_at,
            received_at: time::now(),
            size: raw.len() as u64,
            has_attachment: a.has_attachment,
            preview: a.preview,
            keywords: Vec::new(),
            folders: Vec::new(),
            modseq: 0,
        }
    }
}

/// One node of a message's MIME tree. Offsets index the raw message.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MimePart {
    /// Media type, lower case (`text`).
    pub media_type: String,
    /// Subtype, lower case (`plain`).
    pub media_subtype: String,
    /// Content-Type parameters.
    pub params: Vec<(String, String)>,
    /// Content-Disposition type (`attachment`, `inline`).
    pub disposition: Option<String>,
    /// Content-Disposition parameters.
    pub disposition_params: Vec<(String, String)>,
    /// Content-ID.
    pub content_id: Option<String>,
    /// Content-Description.
    pub description: Option<String>,
    /// Content-Transfer-Encoding, lower case.
    pub transfer_encoding: Option<String>,
    /// Content-Language.
    pub language: Vec<String>,
    /// Content-Location.
    pub location: Option<String>,
    /// Attachment file name (from disposition or type parameters).
    pub filename: Option<String>,
    /// Where this part's header starts.
    pub header_start: usize,
    /// Where its body starts.
    pub body_start: usize,
    /// Where its body ends.
    pub body_end: usize,
    /// Lines in the encoded body.
    pub body_lines: usize,
    /// Size of the decoded body, for leaf parts.
    pub decoded_size: usize,
    /// Children of a multipart, or the root of a nested message.
    pub children: Vec<MimePart>,
    /// True for message/rfc822 (its single child is the nested root).
    pub is_message: bool,
}

const SUMMARY_SELECT: &str = "SELECT e.id, e.thread_id, e.message_id, e.in_reply_to,
    e.references_ids, e.subject, e.from_list, e.sender_list, e.reply_to_list, e.to_list,
    e.cc_list, e.bcc_list, e.sent_at, e.received_at, e.size, e.has_attachment, e.preview,
    e.modseq FROM emails e";

fn split_ids(s: String) -> Vec<String> {
    s.split(' ')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

impl Mailbox {
    /// The exact bytes the message arrived with.
    pub fn raw(&self, id: EmailId) -> Result<Vec<u8>> {
        let (skeleton, compressed, size): (Vec<u8>, bool, i64) = self
            .conn
            .prepare_cached(
                "SELECT b.skeleton, b.compressed, e.size FROM emails e
                 JOIN email_bodies b ON b.email_id = e.id WHERE e.id = ?1",
            )?
            .query_row([id.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?
            .ok_or_else(|| Error::NotFound(format!("email {}", id.0)))?;
        let skeleton = if compressed {
            zstd::stream::decode_all(skeleton.as_slice())
                .map_err(|e| Error::Corrupt(format!("email {}: {e}", id.0)))?
        } else {
            skeleton
        };
        let mut out = Vec::with_capacity(size as usize);
        let mut pos = 0usize;
        let mut stmt = self.conn.prepare_cached(
            "SELECT eb.offset, b.data, b.compressed FROM email_blobs eb
             JOIN blobs b ON b.id = eb.blob_id WHERE eb.email_id = ?1 ORDER BY eb.seq",
        )?;
        let mut rows = stmt.query([id.0])?;
        while let Some(row) = rows.next()? {
            let offset = row.get::<_, i64>(0)? as usize;
            let data: Vec<u8> = row.get(1)?;
            let data = if row.get::<_, bool>(2)? {
                zstd::stream::decode_all(data.as_slice())
                    .map_err(|e| Error::Corrupt(format!("blob of email {}: {e}", id.0)))?
            } else {
                data
            };
            let chunk = skeleton
                .get(pos..offset)
                .ok_or_else(|| Error::Corrupt(format!("email {}: bad blob offset", id.0)))?;
            out.extend_from_slice(chunk);
            out.extend_from_slice(&data);
            pos = offset;
        }
        out.extend_from_slice(&skeleton[pos.min(skeleton.len())..]);
        if out.len() as i64 != size {
            return Err(Error::Corrupt(format!(
                "email {}: rebuilt {} bytes, stored size {size}",
                id.0,
                out.len()
            )));
        }
        Ok(out)
    }

    /// The summary of one email.
    pub fn summary(&self, id: EmailId) -> Result<EmailSummary> {
        self.summaries(&[id])?
            .pop()
            .ok_or_else(|| Error::NotFound(format!("email {}", id.0)))
    }

    /// Summaries of many emails, in the order asked; unknown ids are skipped.
    pub fn summaries(&self, ids: &[EmailId]) -> Result<Vec<EmailSummary>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let json = id_list(ids.iter().map(|e| e.0));
        let mut keywords: HashMap<i64, Vec<Keyword>> = HashMap::new();
        {
            let mut stmt = self.conn.prepare_cached(
                "SELECT k.email_id, k.keyword FROM keywords k
                 WHERE k.email_id IN (SELECT value FROM json_each(?1)) ORDER BY k.keyword",
            )?;
            let mut rows = stmt.query([&json])?;
            while let Some(r) = rows.next()? {
                let k: String = r.get(1)?;
                if let Ok(k) = Keyword::try_from(k.as_str()) {
                    keywords.entry(r.get(0)?).or_default().push(k);
                }
            }
        }
        let mut folders: HashMap<i64, Vec<(FolderId, Uid)>> = HashMap::new();
        {
            let mut stmt = self.conn.prepare_cached(
                "SELECT m.email_id, m.folder_id, m.uid FROM mailbox_messages m
                 WHERE m.email_id IN (SELECT value FROM json_each(?1)) ORDER BY m.folder_id",
            )?;
            let mut rows = stmt.query([&json])?;
            while let Some(r) = rows.next()? {
                let uid = Uid::try_from(r.get::<_, u32>(2)?)?;
                folders
                    .entry(r.get(0)?)
                    .or_default()
                    .push((FolderId(r.get(1)?), uid));
            }
        }
        let mut by_id: HashMap<i64, EmailSummary> = HashMap::with_capacity(ids.len());
        let mut stmt = self.conn.prepare_cached(&format!(
            "{SUMMARY_SELECT} WHERE e.id IN (SELECT value FROM json_each(?1))"
        ))?;
        let mut rows = stmt.query([&json])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let s = EmailSummary {
                id: EmailId(id),
                thread_id: ThreadId(r.get(1)?),
                message_id: r.get(2)?,
                in_reply_to: split_ids(r.get(3)?),
                references: split_ids(r.get(4)?),
                subject: r.get(5)?,
                from: decode_addrs(&r.get::<_, String>(6)?),
                sender: decode_addrs(&r.get::<_, String>(7)?),
                reply_to: decode_addrs(&r.get::<_, String>(8)?),
                to: decode_addrs(&r.get::<_, String>(9)?),
                cc: decode_addrs(&r.get::<_, String>(10)?),
                bcc: decode_addrs(&r.get::<_, String>(11)?),
                sent_at: r
                    .get::<_, Option<String>>(12)?
                    .as_deref()
                    .and_then(time::parse_iso),
                received_at: time::parse_iso(&r.get::<_, String>(13)?).unwrap_or(0),
                size: r.get::<_, i64>(14)? as u64,
                has_attachment: r.get(15)?,
                preview: r.get(16)?,
                keywords: keywords.remove(&id).unwrap_or_default(),
                folders: folders.remove(&id).unwrap_or_default(),
                modseq: r.get::<_, i64>(17)? as ModSeq,
            };
            by_id.insert(id, s);
        }
        Ok(ids.iter().filter_map(|i| by_id.remove(&i.0)).collect())
    }

    /// The email behind a UID in a folder.
    pub fn email_at(&self, folder: FolderId, uid: Uid) -> Result<EmailId> {
        self.conn
            .prepare_cached(
                "SELECT email_id FROM mailbox_messages WHERE folder_id = ?1 AND uid = ?2",
            )?
            .query_row(params![folder.0, uid.get()], |r| r.get(0))
            .optional()?
            .map(EmailId)
            .ok_or_else(|| Error::NotFound(format!("UID {} in folder {}", uid.get(), folder.0)))
    }

    /// Every (UID, email) of a folder in UID order: what an IMAP SELECT maps
    /// sequence numbers from.
    pub fn folder_index(&self, folder: FolderId) -> Result<Vec<(Uid, EmailId)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT uid, email_id FROM mailbox_messages WHERE folder_id = ?1 ORDER BY uid",
        )?;
        let rows = stmt.query_map([folder.0], |r| {
            Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (uid, id) = row?;
            out.push((Uid::try_from(uid)?, EmailId(id)));
        }
        Ok(out)
    }

    /// The MIME tree of a message (offsets index [`Mailbox::raw`]).
    pub fn structure(&self, id: EmailId) -> Result<MimePart> {
        let raw = self.raw(id)?;
        Ok(structure_of(&raw))
    }

    /// One leaf part's body, decoded from its transfer encoding. `path`
    /// holds 0-based child indexes from the root.
    pub fn part_decoded(&self, id: EmailId, path: &[usize]) -> Result<Vec<u8>> {
        part_decoded_of(&self.raw(id)?, path)
    }
}

/// One leaf part's body of raw message bytes, decoded from its transfer
/// encoding. `path` holds 0-based child indexes from the root; a
/// message/rfc822 part's only child (index 0) is its nested root.
pub fn part_decoded_of(raw: &[u8], path: &[usize]) -> Result<Vec<u8>> {
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| Error::NotFound("the message has no MIME structure".into()))?;
    let mut cur_msg = &msg;
    let mut part = cur_msg.root_part();
    for &i in path {
        part = match &part.body {
            PartType::Multipart(children) => children
                .get(i)
                .and_then(|c| cur_msg.parts.get(*c as usize))
                .ok_or_else(|| Error::NotFound(format!("part {path:?}")))?,
            PartType::Message(m) if i == 0 => {
                cur_msg = m;
                m.root_part()
            }
            _ => return Err(Error::NotFound(format!("part {path:?}"))),
        };
    }
    Ok(part.contents().to_vec())
}

/// Builds the MIME tree of raw message bytes; a message that does not parse
/// is one `text/plain` part spanning everything.
pub fn structure_of(raw: &[u8]) -> MimePart {
    match MessageParser::default().parse(raw) {
        Some(msg) => node(&msg, 0, raw),
        None => MimePart {
            media_type: "text".into(),
            media_subtype: "plain".into(),
            params: Vec::new(),
            disposition: None,
            disposition_params: Vec::new(),
            content_id: None,
            description: None,
            transfer_encoding: None,
            language: Vec::new(),
            location: None,
            filename: None,
            header_start: 0,
            body_start: 0,
            body_end: raw.len(),
            body_lines: raw.iter().filter(|b| **b == b'\n').count(),
            decoded_size: raw.len(),
            children: Vec::new(),
            is_message: false,
        },
    }
}

/// One node of the tree. mail-parser reports offsets of nested messages'
/// parts relative to the outermost raw message, so they index `raw` as is.
fn node(msg: &mail_parser::Message<'_>, index: usize, raw: &[u8]) -> MimePart {
    let part: &ParserPart<'_> = &msg.parts[index];
    let ct = part.content_type();
    let (media_type, media_subtype) = match ct {
        Some(ct) => (
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or("plain").to_ascii_lowercase(),
        ),
        None => ("text".to_string(), "plain".to_string()),
    };
    let params = ct
        .and_then(|c| c.attributes())
        .map(|a| {
            a.iter()
                .map(|x| (x.name.to_string(), x.value.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let disp = part.content_disposition();
    let (body_start, body_end) = (
        part.offset_body as usize,
        (part.offset_end as usize).min(raw.len()),
    );
    let body_lines = raw
        .get(body_start..body_end)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0);
    let mut children = Vec::new();
    let mut is_message = false;
    match &part.body {
        PartType::Multipart(ids) => {
            for id in ids {
                children.push(node(msg, *id as usize, raw));
            }
        }
        PartType::Message(inner) => {
            is_message = true;
            children.push(node(inner, 0, raw));
        }
        _ => {}
    }
    MimePart {
        media_type,
        media_subtype,
        params,
        disposition: disp.map(|d| d.ctype().to_ascii_lowercase()),
        disposition_params: disp
            .and_then(|d| d.attributes())
            .map(|a| {
                a.iter()
                    .map(|x| (x.name.to_string(), x.value.to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        content_id: part.content_id().map(str::to_string),
        description: part.content_description().map(str::to_string),
        transfer_encoding: part
            .content_transfer_encoding()
            .map(|s| s.to_ascii_lowercase()),
        language: part
            .content_language()
            .as_text_list()
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default(),
        location: part.content_location().map(str::to_string),
        filename: part.attachment_name().map(str::to_string),
        header_start: part.offset_header as usize,
        body_start,
        body_end,
        body_lines,
        decoded_size: part.len(),
        children,
        is_message,
    }
}
