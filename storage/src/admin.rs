//! Administration carried out by the primary: domains, aliases, quotas,
//! forwarding recipients and webhooks. Requests reach it over the link
//! from a secondary that checked the operator's admin token; none of them
//! can open a mailbox (no password, no key).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::Password;
use crate::primary::Primary;
use crate::types::AliasAddress;

/// An administrative operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminOp {
    /// Hosted domains.
    Domains,
    /// Host a domain.
    AddDomain(String),
    /// Stop hosting a domain (it must have no aliases).
    RemoveDomain(String),
    /// Aliases, all or of one domain.
    Aliases(Option<String>),
    /// Create an alias in a hosted domain; its password is returned once.
    CreateAlias {
        /// The address.
        address: AliasAddress,
        /// Quota in bytes.
        quota: Option<u64>,
    },
    /// Delete an alias with its mailbox, queue and backups; its sessions end.
    DeleteAlias(AliasAddress),
    /// Set or clear a quota.
    SetQuota {
        /// The alias.
        address: AliasAddress,
        /// Bytes, or none.
        quota: Option<u64>,
    },
    /// Forwarding recipients of an alias.
    Forwards(AliasAddress),
    /// Add a forwarding recipient.
    AddForward {
        /// The alias.
        address: AliasAddress,
        /// Where copies go.
        recipient: AliasAddress,
    },
    /// Remove a forwarding recipient.
    RemoveForward {
        /// The alias.
        address: AliasAddress,
        /// The recipient.
        recipient: AliasAddress,
    },
    /// Webhooks of an alias.
    Webhooks(AliasAddress),
    /// Register a webhook; its signing secret is returned once.
    AddWebhook {
        /// The alias.
        address: AliasAddress,
        /// Where to POST.
        url: String,
    },
    /// An alias's vacation response.
    Vacation(AliasAddress),
    /// Replace an alias's vacation response.
    SetVacation {
        /// The alias.
        address: AliasAddress,
        /// The new response.
        vacation: Vacation,
    },
    /// What the MX does with an alias's mail: whether it keeps a copy,
    /// its forwards and its webhooks (with secrets), in one answer.
    Rules(AliasAddress),
    /// Keep arriving mail in the mailbox, or not (when the alias forwards
    /// or posts it elsewhere).
    SetKeepCopy {
        /// The alias.
        address: AliasAddress,
        /// Store a copy in the mailbox.
        keep: bool,
    },
    /// Remove a webhook.
    RemoveWebhook {
        /// The alias.
        address: AliasAddress,
        /// The webhook's id.
        id: i64,
    },
}

/// One alias, as administration sees it (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasInfo {
    /// The address.
    pub address: String,
    /// Quota in bytes.
    pub quota: Option<u64>,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// What the MX does with mail for one alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRules {
    /// Store a copy in the mailbox (the MX stores one anyway when there
    /// is nowhere else for the mail to go).
    pub keep_copy: bool,
    /// Forwarding recipients.
    pub forwards: Vec<String>,
    /// Webhooks, with their secrets.
    pub webhooks: Vec<crate::webhook::WebhookTarget>,
    /// The vacation response, when one is enabled (the MX checks its
    /// dates).
    pub vacation: Option<Vacation>,
}

/// An automatic reply to arriving mail while the alias is away (JMAP
/// VacationResponse, RFC 8621 §8). Kept in the directory, where the MX
/// reads it without the alias's key: its text goes to anyone who writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vacation {
    /// Whether replies are sent.
    pub enabled: bool,
    /// Replies start here (Unix seconds), if set.
    pub from_date: Option<i64>,
    /// Replies stop here (Unix seconds), if set.
    pub to_date: Option<i64>,
    /// The reply's subject (else "Auto: " and the original's).
    pub subject: Option<String>,
    /// The reply's plain text.
    pub text_body: Option<String>,
    /// The reply's HTML.
    pub html_body: Option<String>,
}

impl Vacation {
    /// Whether it answers mail arriving at `now` (Unix seconds).
    pub fn active(&self, now: i64) -> bool {
        self.enabled
            && self.from_date.is_none_or(|f| now >= f)
            && self.to_date.is_none_or(|t| now < t)
    }
}

impl DeliveryRules {
    /// Whether the mailbox gets a copy: when asked to, and always when
    /// nothing else would receive the mail.
    pub fn stores(&self) -> bool {
        self.keep_copy || (self.forwards.is_empty() && self.webhooks.is_empty())
    }
}

/// One webhook (its secret is shown only when created).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookInfo {
    /// Its id.
    pub id: i64,
    /// Where it POSTs.
    pub url: String,
}

/// What an administrative operation returns.
#[derive(Debug, Serialize, Deserialize)]
pub enum AdminReply {
    /// Done.
    Done,
    /// Domains with their alias counts.
    Domains(Vec<(String, u64)>),
    /// Aliases.
    Aliases(Vec<AliasInfo>),
    /// A new alias and its password, shown this once.
    Created(AliasInfo, Password),
    /// Forwarding recipients.
    Forwards(Vec<String>),
    /// Webhooks.
    Webhooks(Vec<WebhookInfo>),
    /// A new webhook and its signing secret (hex), shown this once.
    WebhookCreated(WebhookInfo, String),
    /// An alias's delivery rules.
    Rules(DeliveryRules),
    /// Whether an alias keeps a copy in its mailbox.
    KeepCopy(bool),
    /// An alias's vacation response.
    Vacation(Vacation),
}

fn domain_name(name: &str) -> Result<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    // Reuse the address rules for the domain part.
    AliasAddress::try_from(format!("x@{name}").as_str())
        .map_err(|_| Error::Invalid(format!("{name:?} is not a domain name")))?;
    Ok(name)
}

fn info(a: &crate::AliasRecord) -> AliasInfo {
    AliasInfo {
        address: a.address.to_string(),
        quota: a.quota,
        created_at: a.created_at.clone(),
    }
}

impl Primary {
    /// Carries out an administrative operation.
    pub fn admin(&self, op: AdminOp) -> Result<AdminReply> {
        let store = self.store();
        Ok(match op {
            AdminOp::Domains => AdminReply::Domains(store.directory().domains()?),
            AdminOp::AddDomain(name) => {
                store.directory().add_domain(&domain_name(&name)?)?;
                AdminReply::Done
            }
            AdminOp::RemoveDomain(name) => {
                store.directory().remove_domain(&domain_name(&name)?)?;
                AdminReply::Done
            }
            AdminOp::Aliases(domain) => {
                let domain = domain.map(|d| domain_name(&d)).transpose()?;
                let all = store.directory().aliases()?;
                AdminReply::Aliases(
                    all.iter()
                        .filter(|a| domain.as_deref().is_none_or(|d| a.address.domain() == d))
                        .map(info)
                        .collect(),
                )
            }
            AdminOp::CreateAlias { address, quota } => {
                if !store.directory().has_domain(address.domain())? {
                    return Err(Error::NotFound(format!(
                        "domain {} (add it first)",
                        address.domain()
                    )));
                }
                let (record, password) = store.create_alias(&address, quota)?;
                AdminReply::Created(info(&record), password)
            }
            AdminOp::DeleteAlias(address) => {
                let alias = store.alias(&address)?;
                self.end_sessions_of(alias.id);
                store.delete_alias(&address)?;
                AdminReply::Done
            }
            AdminOp::SetQuota { address, quota } => {
                let alias = store.alias(&address)?;
                store.directory().set_quota(alias.id, quota)?;
                self.apply_quota(alias.id, quota);
                AdminReply::Done
            }
            AdminOp::Forwards(address) => {
                let alias = store.alias(&address)?;
                AdminReply::Forwards(store.directory().forwards(alias.id)?)
            }
            AdminOp::AddForward { address, recipient } => {
                let alias = store.alias(&address)?;
                if recipient == address {
                    return Err(Error::Invalid("an alias cannot forward to itself".into()));
                }
                store.directory().add_forward(alias.id, &recipient)?;
                AdminReply::Done
            }
            AdminOp::RemoveForward { address, recipient } => {
                let alias = store.alias(&address)?;
                store.directory().remove_forward(alias.id, &recipient)?;
                AdminReply::Done
            }
            AdminOp::Webhooks(address) => {
                let alias = store.alias(&address)?;
                AdminReply::Webhooks(
                    store
                        .directory()
                        .webhooks(alias.id)?
                        .into_iter()
                        .map(|w| WebhookInfo {
                            id: w.id,
                            url: w.url,
                        })
                        .collect(),
                )
            }
            AdminOp::AddWebhook { address, url } => {
                let alias = store.alias(&address)?;
                let secret: [u8; 32] = crate::keys::random_bytes();
                let id = store.directory().add_webhook(alias.id, &url, &secret)?;
                AdminReply::WebhookCreated(WebhookInfo { id, url }, hex::encode(secret))
            }
            AdminOp::Rules(address) => {
                let alias = store.alias(&address)?;
                let dir = store.directory();
                AdminReply::Rules(DeliveryRules {
                    keep_copy: dir.keep_copy(alias.id)?,
                    forwards: dir.forwards(alias.id)?,
                    webhooks: dir
                        .webhooks(alias.id)?
                        .into_iter()
                        .map(|w| crate::webhook::WebhookTarget {
                            id: w.id,
                            url: w.url,
                            secret: w.secret,
                        })
                        .collect(),
                    vacation: Some(dir.vacation(alias.id)?).filter(|v| v.enabled),
                })
            }
            AdminOp::Vacation(address) => {
                let alias = store.alias(&address)?;
                AdminReply::Vacation(store.directory().vacation(alias.id)?)
            }
            AdminOp::SetVacation { address, vacation } => {
                let alias = store.alias(&address)?;
                store.directory().set_vacation(alias.id, &vacation)?;
                AdminReply::Vacation(vacation)
            }
            AdminOp::SetKeepCopy { address, keep } => {
                let alias = store.alias(&address)?;
                store.directory().set_keep_copy(alias.id, keep)?;
                AdminReply::KeepCopy(keep)
            }
            AdminOp::RemoveWebhook { address, id } => {
                let alias = store.alias(&address)?;
                let known = store
                    .directory()
                    .webhooks(alias.id)?
                    .iter()
                    .any(|w| w.id == id);
                if !known {
                    return Err(Error::NotFound(format!("webhook {id}")));
                }
                store.directory().remove_webhook(alias.id, id)?;
                AdminReply::Done
            }
        })
    }
}
