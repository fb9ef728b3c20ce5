//! `GET /`: the coordinators' status page.
//!
//! One self-contained HTML document (style and script inline, no external assets, no fonts,
//! no CDN). The server renders its content from the status report ([`super::view`]): what
//! needs a person (with why and what to do), what expires soon, what is being retried (with
//! the last error), open tasks by type and state, records, and a bar chart of tasks answered
//! and expired per day. It works without JavaScript; the script fetches the same page every
//! 15 seconds, swaps the new content in (parsed with `DOMParser`, never `innerHTML`) and
//! ticks the countdowns. Urgent things come first, in red and amber; it names tasks by type in
//! plain words and by key, never a patient. The assets are in `assets/` next to this file.
//!
//! # The token in a browser
//!
//! With `[admin] token_file` set, the page needs the token too. A browser cannot add an
//! `Authorization` header to a link, so `/` without it answers 401 with a small login form
//! that POSTs the token to `/` ([`super::auth::login`]), which answers with the page; the
//! form's script keeps the token in `sessionStorage` (this tab only, gone when the tab
//! closes), where the page's script finds it and sends it as `Authorization: Bearer` on every
//! fetch. A link may carry the token after `#` (`/#token=…`): browsers never send that part,
//! and the form's script takes it from there. Reloading `/` shows the form, whose script
//! submits this tab's token once (a token the agent rejected is forgotten instead).
//!
//! The trade-offs, chosen deliberately:
//!
//! * The token is never part of a URL the agent accepts (`?token=` is ignored), so it lands in
//!   no browser history, proxy log or `Referer`.
//! * `sessionStorage` is readable by script on the same origin. The page runs only its own
//!   inline script, pinned by hash in a strict Content-Security-Policy, and builds the DOM with
//!   `textContent` (never `innerHTML`), so data from the store cannot inject script.
//! * A cookie would survive reloads, but browsers send cookies to every port of a host, so
//!   other services on the same machine would receive the token; storage is per origin
//!   (port included).

use std::sync::{Arc, OnceLock};

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::AdminState;
use super::auth::{self, Verdict};

const PAGE_HTML: &str = include_str!("assets/page.html");
const PAGE_CSS: &str = include_str!("assets/page.css");
const PAGE_JS: &str = include_str!("assets/page.js");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const LOGIN_CSS: &str = include_str!("assets/login.css");
const LOGIN_JS: &str = include_str!("assets/login.js");

/// An assembled document and the Content-Security-Policy that allows exactly its inline parts.
struct Document {
    html: String,
    csp: HeaderValue,
}

fn csp_hash(text: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

fn assemble(template: &str, css: &str, js: &str, connect: bool) -> Document {
    let html = template.replace("{{STYLE}}", css).replace("{{SCRIPT}}", js);
    let csp = format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src {}; img-src 'self'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        csp_hash(js),
        csp_hash(css),
        if connect { "'self'" } else { "'none'" }
    );
    // The policy is ASCII by construction (keywords and base64).
    let csp = HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'none'"));
    Document { html, csp }
}

/// The page around its rendered content (`{{BODY}}`); the policy pins the constant script
/// and style, so it is computed once.
fn status_page(body: &str) -> Document {
    static FRAME: OnceLock<Document> = OnceLock::new();
    let frame = FRAME.get_or_init(|| assemble(PAGE_HTML, PAGE_CSS, PAGE_JS, true));
    Document {
        // Last, so that text in the report can never be taken for a placeholder.
        html: frame.html.replacen("{{BODY}}", body, 1),
        csp: frame.csp.clone(),
    }
}

/// The page with the daemon's current report, rendered on the server.
async fn current_page(state: Arc<AdminState>) -> Response {
    let rendered = tokio::task::spawn_blocking(move || {
        super::api::report(&state, super::DEFAULT_HISTORY_DAYS)
            .map(|r| super::view::render(&r, chrono::Utc::now()))
    })
    .await;
    match rendered {
        Ok(Ok(body)) => html(StatusCode::OK, &status_page(&body)),
        Ok(Err(e)) => unavailable(&format!("the store cannot be read: {e}")),
        Err(e) => unavailable(&format!("the status report failed: {e}")),
    }
}

fn unavailable(why: &str) -> Response {
    let body = format!(
        "<main><div class=\"banner red\" role=\"alert\" data-testid=\"outage\">The agent cannot show its status right now. Tell your IT team.{}</div></main>",
        super::view::folded(why)
    );
    html(StatusCode::SERVICE_UNAVAILABLE, &status_page(&body))
}

fn login_page(rejected: bool) -> Document {
    let template = LOGIN_HTML
        .replace("{{REJECTED}}", if rejected { "true" } else { "false" })
        .replace(
            "{{MESSAGE}}",
            if rejected {
                "That access token is not valid (it may have been changed). Enter the current one."
            } else {
                "This page needs the access token of the agent's admin page."
            },
        );
    assemble(&template, LOGIN_CSS, LOGIN_JS, false)
}

fn html(status: StatusCode, doc: &Document) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        doc.html.clone(),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, doc.csp.clone());
    response
}

pub async fn page(
    State(state): State<Arc<AdminState>>,
    Extension(client): Extension<auth::ClientAddr>,
    headers: HeaderMap,
) -> Response {
    match auth::check(&state, client, auth::bearer(&headers)) {
        Ok(verdict) => respond(state, verdict).await,
        Err(throttled) => throttled.into_response(),
    }
}

/// The page for an allowed request, the login form otherwise.
pub(super) async fn respond(state: Arc<AdminState>, verdict: Verdict) -> Response {
    match verdict {
        Verdict::Allowed => current_page(state).await,
        Verdict::Missing => html(StatusCode::UNAUTHORIZED, &login_page(false)),
        Verdict::Wrong => html(StatusCode::UNAUTHORIZED, &login_page(true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_its_policy_pins_its_inline_parts() {
        let doc = status_page("<main>{{SCRIPT}}</main>");
        assert!(
            !doc.html
                .replace("<main>{{SCRIPT}}</main>", "")
                .contains("{{"),
            "every placeholder is filled, and text in the body is not taken for one"
        );
        for external in ["src=\"http", "href=\"http", "src=\"//", "@import", "url("] {
            assert!(
                !doc.html.contains(external),
                "no external asset: {external}"
            );
        }
        assert!(
            !PAGE_JS.contains("innerHTML"),
            "data goes into the DOM as text only"
        );
        let csp = doc.csp.to_str().unwrap();
        assert!(
            csp.contains(&csp_hash(PAGE_JS)) && csp.contains(&csp_hash(PAGE_CSS)),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        // The hashed text must be exactly what sits between the tags.
        assert!(doc.html.contains(&format!("<script>{PAGE_JS}</script>")));
        assert!(doc.html.contains(&format!("<style>{PAGE_CSS}</style>")));
    }

    #[test]
    fn the_login_page_says_whether_the_token_was_wrong() {
        let fresh = login_page(false);
        assert!(fresh.html.contains("data-rejected=\"false\""));
        let rejected = login_page(true);
        assert!(rejected.html.contains("data-rejected=\"true\""));
        assert!(rejected.html.contains("not valid"));
        assert!(!rejected.html.contains("{{"));
    }
}
