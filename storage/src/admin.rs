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
#[derive(Debug, Serialize, Deserialize)]
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
    /// Webhooks of an alias with their signing secrets (for the MX that
    /// posts; the admin API never asks for this).
    WebhookTargets(AliasAddress),
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
    /// Where an alias's webhooks post, with their secrets.
    WebhookTargets(Vec<crate::webhook::WebhookTarget>),
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
            AdminOp::WebhookTargets(address) => {
                let alias = store.alias(&address)?;
                AdminReply::WebhookTargets(
                    store
                        .directory()
                        .webhooks(alias.id)?
                        .into_iter()
                        .map(|w| crate::webhook::WebhookTarget {
                            id: w.id,
                            url: w.url,
                            secret: w.secret,
                        })
                        .collect(),
                )
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
