//! The web console (issue 5): plain HTML/CSS/JS from `backend/console/`, compiled into the binary
//! with `rust-embed` so running the product stays one command with no front-end toolchain. In
//! debug builds `rust-embed` reads the files from disk on every request, so the assets can be
//! edited without rebuilding.
//!
//! Every answer carries a strict Content-Security-Policy (scripts and styles only from our own
//! files: no inline script, no `on*=` handler, no inline `<style>`), `nosniff`, no referrer and no
//! framing. The console is a single page with hash routes (`/console#/keys`), so only real files
//! are served; anything else under `/console/` is a 404.

use axum::{
    body::Body,
    extract::Path,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "console/"]
struct Assets;

/// `default-src 'none'` and then only what the console needs, all of it same-origin: the `/admin`
/// API and the `/v1` Playground calls (`connect-src`), our scripts, stylesheet and favicon. Charts
/// are inline SVG built through the DOM, and widths are set through CSSOM (allowed without
/// `unsafe-inline`, unlike `style=""` attributes).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(root))
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/{*path}", get(asset))
}

/// The product has no other page at `/`: send people to the console.
async fn root() -> Response {
    let mut response = StatusCode::FOUND.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/console"));
    secure(response)
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, request_headers: &HeaderMap) -> Response {
    // `rust-embed` only knows the files it embedded, but in debug builds it reads from disk:
    // refuse anything that could climb out of the folder before asking it.
    let file = if path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        None
    } else {
        Assets::get(path)
    };
    let Some(file) = file else {
        let mut response = (StatusCode::NOT_FOUND, "not found\n").into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return secure(response);
    };
    // Names are not fingerprinted, so browsers keep a copy but revalidate it every time
    // (`no-cache`); the content hash as ETag turns that into a cheap 304.
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let fresh = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(Body::from(file.data.into_owned()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    secure(response)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header<'a>(response: &'a Response, name: &str) -> &'a str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn index_is_html_with_strict_headers() {
        for path in ["/console", "/console/", "/console/index.html"] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                header(&response, "content-type"),
                "text/html; charset=utf-8"
            );
            let csp = header(&response, "content-security-policy");
            assert!(csp.contains("script-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
            assert_eq!(header(&response, "x-content-type-options"), "nosniff");
            assert_eq!(header(&response, "referrer-policy"), "no-referrer");
            assert_eq!(header(&response, "x-frame-options"), "DENY");
            assert_eq!(header(&response, "cache-control"), "no-cache");
        }
    }

    #[tokio::test]
    async fn assets_have_their_content_types_and_revalidate() {
        let response = get("/console/js/main.js", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "content-type"),
            "text/javascript; charset=utf-8"
        );
        let etag = header(&response, "etag").to_owned();
        assert!(etag.starts_with('"') && etag.len() > 10);
        let again = get("/console/js/main.js", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&again, "x-frame-options"), "DENY");

        let css = get("/console/app.css", None).await;
        assert_eq!(header(&css, "content-type"), "text/css; charset=utf-8");
    }

    #[tokio::test]
    async fn unknown_and_escaping_paths_are_404() {
        for path in [
            "/console/nope.js",
            "/console/../Cargo.toml",
            "/console/js/../../Cargo.toml",
            "/console/%2e%2e/Cargo.toml",
            "/console//etc/passwd",
        ] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        }
    }

    #[tokio::test]
    async fn root_redirects_to_the_console() {
        let response = get("/", None).await;
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(header(&response, "location"), "/console");
    }

    /// The CSP would block them anyway; this keeps them from being written in the first place.
    #[test]
    fn no_inline_script_or_handler_in_any_asset() {
        for name in Assets::iter() {
            if !name.ends_with(".html") {
                continue;
            }
            let text = String::from_utf8(Assets::get(&name).unwrap().data.into_owned()).unwrap();
            let lower = text.to_ascii_lowercase();
            for (at, _) in lower.match_indices("<script") {
                let tag_end = lower[at..].find('>').unwrap() + at;
                assert!(
                    lower[at..tag_end].contains(" src="),
                    "{name}: inline <script> at byte {at}"
                );
            }
            assert!(!lower.contains("<style"), "{name}: inline <style>");
            assert!(!lower.contains(" style="), "{name}: style attribute");
            let handler = lower.match_indices(" on").any(|(at, _)| {
                let rest = &lower[at + 3..];
                let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
                name_len > 0 && rest[name_len..].trim_start().starts_with('=')
            });
            assert!(!handler, "{name}: inline on*= handler");
            assert!(!lower.contains("javascript:"), "{name}: javascript: URL");
        }
    }

    /// User-supplied text reaches the page only through `textContent`/`setAttribute`, and no
    /// credential is ever persisted by the browser.
    #[test]
    fn scripts_use_no_html_sinks_and_no_storage() {
        for name in Assets::iter().filter(|n| n.ends_with(".js")) {
            let text = String::from_utf8(Assets::get(&name).unwrap().data.into_owned()).unwrap();
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "localStorage",
                "sessionStorage",
                "document.cookie",
            ] {
                assert!(!text.contains(banned), "{name} uses {banned}");
            }
        }
    }
}
