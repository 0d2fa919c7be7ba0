//! Every view of a token, in one place: bentogate's own JSON (CLI `-o json`), the one-line access
//! summary and owner (tables, the console), BentoCloud's ApiTokenSchema (the token API) and the
//! RFC 7662 introspection answer.
//!
//! What it must never do: show a token's value or digest. Only the create paths add the value,
//! once, beside a view.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::clock::{self, UnixSeconds};
use crate::store::{Member, Organization};
use crate::token::{OwnerKind, Token};

/// One token, seen from outside.
#[derive(Clone, Copy)]
pub struct TokenView<'a>(pub &'a Token);

impl TokenView<'_> {
    /// bentogate's own JSON shape (the CLI's `-o json`).
    pub fn json(&self, now: UnixSeconds) -> Value {
        let t = self.0;
        json!({
            "uid": t.uid,
            "name": t.name,
            "description": t.description,
            "kind": self.kind(),
            "user": t.user,
            "scopes": t.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "deployments": t.deployments,
            "all_deployments": t.all_deployments,
            "monitoring": t.monitoring,
            "created_at": clock::format(t.created_at),
            "updated_at": clock::format(t.updated_at),
            "expired_at": t.expired_at.map(clock::format),
            "last_used_at": t.last_used_at.map(clock::format),
            "is_expired": t.is_expired(now),
        })
    }

    /// `organization` or `personal`.
    pub fn kind(&self) -> &'static str {
        match self.0.kind {
            OwnerKind::Organization => "organization",
            OwnerKind::Personal => "personal",
        }
    }

    /// Who owns it: `organization`, or the member's name.
    pub fn owner(&self) -> &str {
        match self.0.kind {
            OwnerKind::Organization => "organization",
            OwnerKind::Personal => &self.0.user,
        }
    }

    /// What it grants, in one line (`all deployments; scopes: api; monitoring`).
    pub fn access(&self) -> String {
        let t = self.0;
        let mut parts = Vec::new();
        if t.all_deployments {
            parts.push("all deployments".to_owned());
        } else if !t.deployments.is_empty() {
            parts.push(format!("deployments: {}", t.deployments.join(",")));
        }
        if !t.scopes.is_empty() {
            parts.push(format!(
                "scopes: {}",
                t.scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        if t.monitoring {
            parts.push("monitoring".to_owned());
        }
        parts.join("; ")
    }

    /// The RFC 7662 answer for a live token: uid (`client_id`), owner (`sub`), scopes (`scope`,
    /// space separated), expiry (`exp`), the deployments it reaches (`aud`, `*` for All
    /// Deployments) and, as extensions, `name`, `owner_kind` and `monitoring`.
    pub fn introspection(&self) -> Value {
        let t = self.0;
        let aud: Vec<&str> = if t.all_deployments {
            vec!["*"]
        } else {
            t.deployments.iter().map(String::as_str).collect()
        };
        let mut answer = json!({
            "active": true,
            "token_type": "Bearer",
            "client_id": t.uid,
            "sub": t.user,
            "scope": t.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "),
            "aud": aud,
            "iat": t.created_at,
            "name": t.name,
            "owner_kind": self.kind(),
            "monitoring": t.monitoring,
        });
        if let Some(exp) = t.expired_at {
            answer["exp"] = json!(exp);
        }
        answer
    }
}

/// A stable uid for the organization, derived from its name (the stores keep none).
fn org_uid(org: &Organization) -> String {
    hex::encode(&crate::token::Digest::of(org.name.as_bytes()).0[..10])
}

/// The organization in the client's OrganizationSchema.
pub fn org_json(org: &Organization) -> Value {
    json!({
        "uid": org_uid(org),
        "created_at": clock::format(org.created_at.unwrap_or(0)),
        "updated_at": null,
        "deleted_at": null,
        "name": org.name,
        "resource_type": "organization",
        "labels": [],
        "description": "",
    })
}

/// A user in the client's UserSchema.
pub fn user_value(name: &str, member: Option<&Member>) -> Value {
    json!({
        "name": name,
        // The client prints the email on login; a user with none is shown by name.
        "email": member.and_then(|m| m.email.clone()).unwrap_or_else(|| name.to_owned()),
        "first_name": "",
        "last_name": "",
    })
}

/// Tokens of one organization in BentoCloud's ApiTokenSchema (what the `bentoml` client reads):
/// the organization object is built once per answer, not per token, and the members shown are
/// only those who own or made the tokens of the answer.
pub struct ApiView {
    members: HashMap<String, Member>,
    org: Value,
}

impl ApiView {
    /// The view for tokens of `org`, with the members they name.
    pub fn new(org: &Organization, members: impl IntoIterator<Item = Member>) -> ApiView {
        ApiView {
            members: members.into_iter().map(|m| (m.name.clone(), m)).collect(),
            org: org_json(org),
        }
    }

    /// A token in the client's ApiTokenSchema, with bentogate's access fields beside it. Never
    /// the value or the digest.
    pub fn token(&self, t: &Token, now: UnixSeconds) -> Value {
        json!({
            "uid": t.uid,
            "created_at": clock::format(t.created_at),
            "updated_at": clock::format(t.updated_at),
            "deleted_at": null,
            "name": t.name,
            "resource_type": "api_token",
            "labels": [],
            "description": t.description.clone().unwrap_or_default(),
            "scopes": t.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "user": user_value(&t.user, self.members.get(&t.user)),
            "organization": self.org,
            "expired_at": t.expired_at.map(clock::format),
            "last_used_at": t.last_used_at.map(clock::format),
            "is_expired": t.is_expired(now),
            "is_api_token": true,
            "is_organization_token": t.kind == OwnerKind::Organization,
            "is_global_access": t.all_deployments,
            "deployments": t.deployments,
            "all_deployments": t.all_deployments,
            "monitoring": t.monitoring,
        })
    }
}
