//! The public model catalog: every model id the gateway accepts, the upstream mode it maps
//! to, the pool tier it needs and what one call costs against the account's quota.

use serde::{Deserialize, Serialize};

/// Account tiers, from cheapest to most capable. A request may be served by an account of
/// its own tier or any higher one (basic models may use super accounts; heavy only heavy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Basic,
    Super,
    Heavy,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Basic => "basic",
            Tier::Super => "super",
            Tier::Heavy => "heavy",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "basic" => Some(Tier::Basic),
            "super" => Some(Tier::Super),
            "heavy" => Some(Tier::Heavy),
            _ => None,
        }
    }

    /// The tiers that may serve a request needing `self`, in the order they are tried:
    /// the cheapest suitable accounts first, so scarce super quota is kept for what needs it.
    pub fn eligible(self) -> &'static [Tier] {
        match self {
            Tier::Basic => &[Tier::Basic, Tier::Super, Tier::Heavy],
            Tier::Super => &[Tier::Super, Tier::Heavy],
            Tier::Heavy => &[Tier::Heavy],
        }
    }
}

/// What kind of job a model produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Chat,
    Image,
    ImageEdit,
    Video,
}

/// One entry of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// The id callers put in `model`.
    pub id: &'static str,
    /// The upstream chat mode (`modeId` on REST, `session.model` on the WebSocket gateway).
    pub upstream_mode: &'static str,
    pub tier: Tier,
    /// Quota units one successful call consumes.
    pub cost: u32,
    pub kind: ModelKind,
}

const fn chat(id: &'static str, mode: &'static str, tier: Tier, cost: u32) -> ModelSpec {
    ModelSpec {
        id,
        upstream_mode: mode,
        tier,
        cost,
        kind: ModelKind::Chat,
    }
}

/// The original product's catalog, in its order, followed by the newest upstream modes.
pub const MODELS: &[ModelSpec] = &[
    chat("grok-3", "fast", Tier::Basic, 1),
    chat("grok-3-mini", "fast", Tier::Basic, 1),
    chat("grok-3-thinking", "expert", Tier::Basic, 1),
    chat("grok-4", "fast", Tier::Basic, 1),
    chat("grok-4-mini", "fast", Tier::Basic, 1),
    chat("grok-4-thinking", "expert", Tier::Basic, 1),
    chat("grok-4-heavy", "heavy", Tier::Super, 4),
    chat("grok-4.1-mini", "expert", Tier::Basic, 1),
    chat("grok-4.1-fast", "fast", Tier::Basic, 1),
    chat("grok-4.1-expert", "expert", Tier::Basic, 4),
    chat("grok-4.1-thinking", "expert", Tier::Basic, 4),
    chat("grok-4.20-beta", "expert", Tier::Basic, 1),
    ModelSpec {
        id: "grok-imagine-1.0",
        upstream_mode: "imagine",
        tier: Tier::Basic,
        cost: 4,
        kind: ModelKind::Image,
    },
    ModelSpec {
        id: "grok-imagine-1.0-edit",
        upstream_mode: "imagine-image-edit",
        tier: Tier::Basic,
        cost: 4,
        kind: ModelKind::ImageEdit,
    },
    ModelSpec {
        id: "grok-imagine-1.0-video",
        upstream_mode: "imagine-video-gen",
        tier: Tier::Basic,
        cost: 4,
        kind: ModelKind::Video,
    },
    chat("grok-chat-fast", "fast", Tier::Basic, 1),
    chat("grok-chat-auto", "auto", Tier::Super, 1),
    chat("grok-chat-expert", "expert", Tier::Super, 4),
    chat("grok-chat-heavy", "heavy", Tier::Super, 4),
];

/// Looks a model up by its public id.
pub fn find(id: &str) -> Option<&'static ModelSpec> {
    MODELS.iter().find(|m| m.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_resolvable() {
        for (i, m) in MODELS.iter().enumerate() {
            assert!(
                MODELS[..i].iter().all(|o| o.id != m.id),
                "duplicate {}",
                m.id
            );
            assert_eq!(find(m.id), Some(m));
        }
        assert!(find("gpt-4").is_none());
    }

    #[test]
    fn heavy_needs_heavy_and_basic_may_use_any() {
        assert_eq!(
            find("grok-4-heavy").unwrap().tier.eligible(),
            &[Tier::Super, Tier::Heavy]
        );
        assert_eq!(Tier::Basic.eligible().len(), 3);
    }
}
