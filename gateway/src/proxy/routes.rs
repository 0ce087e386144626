//! Which class of route a request path belongs to; the class decides the checks.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// `/v1/*`: API key, whitelist and limits checked, identity forwarded.
    V1,
    /// `/v1/openapi.json`: forwarded without a key.
    OpenApi,
    /// `/admin/*`: the console's API, authenticated by the backend's session.
    Admin,
    /// `/console`, `/console/*`, and `/` (which the backend redirects to `/console`).
    Console,
    /// `/channels/whatsapp/webhook/*`: Meta's callbacks (and its verification handshake) for the
    /// WhatsApp Cloud API channel, forwarded without an API key and counted against no key's
    /// limits; the backend authenticates each callback by its `X-Hub-Signature-256`.
    ChannelWebhook,
    /// `/healthz`: answered by the gateway itself.
    Healthz,
    /// `/internal/*`: never reachable through the gateway.
    Internal,
    /// Anything else.
    Unknown,
}

impl RouteClass {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            RouteClass::V1 => "v1",
            RouteClass::OpenApi => "openapi",
            RouteClass::Admin => "admin",
            RouteClass::Console => "console",
            RouteClass::ChannelWebhook => "channel_webhook",
            RouteClass::Healthz => "healthz",
            RouteClass::Internal => "internal",
            RouteClass::Unknown => "unknown",
        }
    }

    pub fn is_forwarded(self) -> bool {
        matches!(
            self,
            RouteClass::V1
                | RouteClass::OpenApi
                | RouteClass::Admin
                | RouteClass::Console
                | RouteClass::ChannelWebhook
        )
    }
}

/// The root of the WhatsApp webhook routes, one per account below it
/// (`/channels/whatsapp/webhook/{account_id}`).
const CHANNEL_WEBHOOK: &str = "/channels/whatsapp/webhook";

fn under(path: &str, root: &str) -> bool {
    path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Classifies a request path (without query). Paths that a backend might normalise into a
/// different route (dot segments, encoded dots or slashes, backslashes, empty segments) are
/// `Unknown`, so `/v1/../internal/keys` cannot reach `/internal`.
pub fn classify(path: &str) -> RouteClass {
    if !path.starts_with('/') || is_ambiguous(path) {
        return RouteClass::Unknown;
    }
    if path == "/healthz" {
        RouteClass::Healthz
    } else if path == "/" {
        // The backend redirects the bare origin to the console.
        RouteClass::Console
    } else if path == "/v1/openapi.json" {
        RouteClass::OpenApi
    } else if under(path, "/v1") {
        RouteClass::V1
    } else if under(path, "/admin") {
        RouteClass::Admin
    } else if under(path, "/console") {
        RouteClass::Console
    } else if under(path, CHANNEL_WEBHOOK) && path != CHANNEL_WEBHOOK {
        RouteClass::ChannelWebhook
    } else if under(path, "/internal") {
        RouteClass::Internal
    } else {
        RouteClass::Unknown
    }
}

fn is_ambiguous(path: &str) -> bool {
    if path.contains('\\') || path.contains("//") {
        return true;
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return true;
    }
    let lower = path.to_ascii_lowercase();
    lower.contains("%2e") || lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(classify("/healthz"), RouteClass::Healthz);
        assert_eq!(classify("/v1/openapi.json"), RouteClass::OpenApi);
        assert_eq!(classify("/v1/messages"), RouteClass::V1);
        assert_eq!(classify("/v1"), RouteClass::V1);
        assert_eq!(classify("/v1x"), RouteClass::Unknown);
        assert_eq!(classify("/admin/keys/key_1"), RouteClass::Admin);
        assert_eq!(classify("/console"), RouteClass::Console);
        assert_eq!(classify("/console/assets/app.js"), RouteClass::Console);
        assert_eq!(classify("/consoleX"), RouteClass::Unknown);
        assert_eq!(classify("/internal/keys"), RouteClass::Internal);
        assert_eq!(classify("/"), RouteClass::Console);
        assert_eq!(classify("/metrics"), RouteClass::Unknown);
        assert_eq!(
            classify("/channels/whatsapp/webhook/acc_01"),
            RouteClass::ChannelWebhook
        );
        assert_eq!(classify("/channels/whatsapp/webhook"), RouteClass::Unknown);
        assert_eq!(classify("/channels/whatsapp"), RouteClass::Unknown);
        assert_eq!(
            classify("/channels/whatsapp/webhookx/acc_01"),
            RouteClass::Unknown
        );
    }

    #[test]
    fn traversal_never_reaches_internal() {
        for p in [
            "/v1/../internal/keys",
            "/v1/%2e%2e/internal/keys",
            "/v1/%2E%2E/internal/keys",
            "/v1/.%2e/internal",
            "/v1%2f..%2finternal",
            "/v1/./messages",
            "//internal/keys",
            "/v1\\..\\internal",
            "/admin/..",
            "/channels/whatsapp/webhook/../../../internal/keys",
            "/channels/whatsapp/webhook/%2e%2e/%2e%2e/internal/keys",
            "/channels/whatsapp/webhook/acc_1/..%2f..%2finternal",
            "/channels/whatsapp/webhook//internal/keys",
        ] {
            assert_eq!(classify(p), RouteClass::Unknown, "{p}");
        }
    }
}
