//! Reading mail to import: mbox files, Maildir folders and single `.eml`
//! files. Bytes in, messages out; storing them is the caller's.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use mail_parser::mailbox::{maildir, mbox};

use crate::error::{Error, Result};
use crate::types::Keyword;

/// One message to import.
#[derive(Debug, Clone)]
pub struct ImportItem {
    /// The message's bytes, as they will be stored.
    pub raw: Vec<u8>,
    /// Flags carried by the source (Maildir file name flags).
    pub keywords: Vec<Keyword>,
    /// The source's received date, if it has one.
    pub received_at: Option<i64>,
}

/// What kind of source a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory with `cur/` or `new/`.
    Maildir,
    /// A file that starts with a `From ` line.
    Mbox,
    /// A single RFC 5322 message.
    Eml,
}

/// Decides how to read a path.
pub fn detect(path: &Path) -> Result<SourceKind> {
    if path.is_dir() {
        if path.join("cur").is_dir() || path.join("new").is_dir() {
            return Ok(SourceKind::Maildir);
        }
        return Err(Error::Invalid(format!(
            "{} is a directory but not a Maildir (no cur/ or new/)",
            path.display()
        )));
    }
    let mut head = [0u8; 5];
    let n = File::open(path)?.read(&mut head)?;
    Ok(if &head[..n] == b"From " {
        SourceKind::Mbox
    } else {
        SourceKind::Eml
    })
}

/// Reads every message from a source, in order.
pub fn read(path: &Path) -> Result<Box<dyn Iterator<Item = Result<ImportItem>>>> {
    Ok(match detect(path)? {
        SourceKind::Eml => {
            let raw = std::fs::read(path)?;
            Box::new(std::iter::once(Ok(ImportItem {
                raw,
                keywords: Vec::new(),
                received_at: None,
            })))
        }
        SourceKind::Mbox => {
            let reader = BufReader::new(File::open(path)?);
            Box::new(mbox::MessageIterator::new(reader).map(|m| {
                let m = m?;
                let date = m.internal_date();
                Ok(ImportItem {
                    raw: m.unwrap_contents(),
                    keywords: Vec::new(),
                    received_at: (date > 0).then_some(date as i64),
                })
            }))
        }
        SourceKind::Maildir => {
            let iter = maildir::MessageIterator::new(PathBuf::from(path))?;
            Box::new(iter.map(|m| {
                let m = m?;
                let keywords = m
                    .flags()
                    .iter()
                    .map(|f| match f {
                        maildir::Flag::Seen => Keyword::seen(),
                        maildir::Flag::Replied => Keyword::answered(),
                        maildir::Flag::Flagged => Keyword::flagged(),
                        maildir::Flag::Draft => Keyword::draft(),
                        maildir::Flag::Trashed => Keyword::deleted(),
                        maildir::Flag::Passed => Keyword::forwarded(),
                    })
                    .collect();
                let date = m.internal_date();
                Ok(ImportItem {
                    keywords,
                    received_at: (date > 0).then_some(date as i64),
                    raw: m.unwrap_contents(),
                })
            }))
        }
    })
}

/// Counts the messages in a source without keeping them (for progress bars).
pub fn count(path: &Path) -> Result<u64> {
    let mut n = 0;
    for item in read(path)? {
        item?;
        n += 1;
    }
    Ok(n)
}
