//! The web endpoint: RFC 8058 one-click unsubscribe and confirmation links.
//!
//! - `POST /u/TOKEN` removes the member the token names, at once, with no further question
//!   (this is what mail providers call with `List-Unsubscribe=One-Click`).
//! - `GET /u/TOKEN` shows a page with one button that makes that POST; a GET never changes
//!   anything (link scanners and prefetchers follow GETs).
//! - `GET /confirm/TOKEN` shows a page with a button; `POST /confirm/TOKEN` confirms.
//! - `GET /archive/<list>/...` serves the public archives (`[archive] dir`), with downloads
//!   always as attachments.
//!
//! Pages come from `page.html` in the list's (or member's) language, need no JavaScript,
//! load nothing from elsewhere, and never show who is on a list. Tokens are in the path, so
//! every answer carries `Referrer-Policy: no-referrer` and `Cache-Control: no-store`.

use crate::commands::{Plan, TokenFail};
use crate::config::{Language, ListConfig};
use crate::tokens::{Kind, Token};
use crate::Services;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use tokio::sync::{watch, Notify};

struct App {
    svc: Services,
    wake_out: Arc<Notify>,
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    svc: Services,
    wake_out: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // Only the public archives: private ones are served to members only (not here).
    let archive_root = svc.cfg.archive_dir();
    let app = Arc::new(App { svc, wake_out });
    let router = Router::new()
        .route("/", get(index))
        .route("/u/{token}", get(unsubscribe_ask).post(unsubscribe_do))
        .route("/confirm/{token}", get(confirm_ask).post(confirm_do))
        .nest_service(
            "/archive",
            tower_http::services::ServeDir::new(archive_root)
                .append_index_html_on_directories(true),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn(archive_headers))
        .with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await
}

/// Headers for the archive's files: the same strict policy as its pages' own meta tag, and
/// downloads (attachments, messages, mbox) never shown inline, whatever their name says.
async fn archive_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path().to_string();
    let mut r = next.run(req).await;
    if !path.starts_with("/archive/") {
        return r;
    }
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    let download = path.contains("/a/") || path.ends_with(".eml") || path.ends_with(".mbox");
    if download {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    r
}

/// An HTML page with the headers every page gets.
fn page(
    app: &App,
    list: Option<&ListConfig>,
    lang: Language,
    status: StatusCode,
    name: &str,
    action: Option<&str>,
) -> Response {
    let vars = minijinja::context! { page => name, action_url => action };
    let (status, body) = match app.svc.texts.page(&app.svc.cfg, list, lang, vars) {
        Ok(b) => (status, b),
        Err(e) => {
            tracing::error!(error = %e, "cannot render a page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>Error</title><p>Error</p>".to_string(),
            )
        }
    };
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    for (k, v) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

fn fail_page(app: &App, list: Option<&ListConfig>, lang: Language, f: TokenFail) -> Response {
    let (status, name) = match f {
        TokenFail::Expired => (StatusCode::GONE, "invalid-expired"),
        TokenFail::Used => (StatusCode::GONE, "invalid-used"),
        TokenFail::NotMember => (StatusCode::OK, "not-member"),
        TokenFail::Forged
        | TokenFail::OtherList
        | TokenFail::NoHeld
        | TokenFail::OtherAddress
        | TokenFail::NotOwner => (StatusCode::NOT_FOUND, "invalid-forged"),
    };
    page(app, list, lang, status, name, None)
}

fn default_lang(app: &App) -> Language {
    app.svc
        .cfg
        .lists
        .first()
        .map_or(Language::Nl, |l| l.language)
}

fn error_page(app: &App, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "web request failed");
    page(
        app,
        None,
        default_lang(app),
        StatusCode::SERVICE_UNAVAILABLE,
        "error",
        None,
    )
}

async fn index(State(app): State<Arc<App>>) -> Response {
    page(
        &app,
        None,
        default_lang(&app),
        StatusCode::OK,
        "index",
        None,
    )
}

async fn not_found(State(app): State<Arc<App>>) -> Response {
    page(
        &app,
        None,
        default_lang(&app),
        StatusCode::NOT_FOUND,
        "not-found",
        None,
    )
}

/// The list (and the member's language) a one-click token names, when it is one of ours.
fn one_click_target<'a>(
    app: &'a App,
    token: &str,
) -> crate::store::Result<Option<(&'a ListConfig, Language)>> {
    let Some(t) = Token::parse(token).filter(|t| t.kind == Kind::OneClick) else {
        return Ok(None);
    };
    let Some((list, m)) = app.svc.store.member_by_uid(t.id)? else {
        return Ok(None);
    };
    if !app.svc.secret.verify(&t, &list, &m.address) {
        return Ok(None);
    }
    Ok(app
        .svc
        .cfg
        .list(&list)
        .map(|l| (l, m.language.unwrap_or(l.language))))
}

async fn unsubscribe_ask(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    match one_click_target(&app, &token) {
        Ok(Some((l, lang))) => page(
            &app,
            Some(l),
            lang,
            StatusCode::OK,
            "unsubscribe-ask",
            Some(&format!("/u/{token}")),
        ),
        // Either never valid or the member already left: the same page, so that nobody
        // can probe whether an address is (still) on a list.
        Ok(None) => fail_page(&app, None, default_lang(&app), TokenFail::Forged),
        Err(e) => error_page(&app, e),
    }
}

async fn unsubscribe_do(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    let target = match one_click_target(&app, &token) {
        Ok(Some(t)) => t,
        Ok(None) => return fail_page(&app, None, default_lang(&app), TokenFail::Forged),
        Err(e) => return error_page(&app, e),
    };
    let (list, lang) = target;
    let mut plan = Plan::new(app.svc.ctx(), list);
    match plan.one_click(&token) {
        Ok(Ok(_)) => {}
        Ok(Err(f)) => return fail_page(&app, Some(list), lang, f),
        Err(e) => return error_page(&app, e),
    }
    if let Err(r) = apply(&app, plan).await {
        return r;
    }
    tracing::info!(list = %list.local(), "member left by one-click unsubscribe");
    page(
        &app,
        Some(list),
        lang,
        StatusCode::OK,
        "unsubscribe-done",
        None,
    )
}

/// Applies a plan durably and wakes delivery for the mail it queued.
async fn apply(app: &App, plan: Plan<'_>) -> Result<(), Response> {
    let (changes, mail) = (plan.changes, plan.mail);
    app.svc
        .store
        .commit(changes, mail)
        .map_err(|e| error_page(app, e))?;
    app.svc
        .store
        .flush_async()
        .await
        .map_err(|e| error_page(app, e))?;
    app.wake_out.notify_one();
    Ok(())
}

/// The list and language of a confirmation token's request, when it is one of ours.
fn confirm_target<'a>(
    app: &'a App,
    token: &str,
) -> crate::store::Result<Option<(&'a ListConfig, Language, &'static str)>> {
    let Some(t) = Token::parse(token).filter(|t| {
        matches!(
            t.kind,
            Kind::Subscribe | Kind::Unsubscribe | Kind::Reenable | Kind::Forget
        )
    }) else {
        return Ok(None);
    };
    let Some(p) = app.svc.store.pending(t.id)? else {
        return Ok(None);
    };
    let Some(l) = app.svc.cfg.list(&p.list) else {
        return Ok(None);
    };
    let which = match t.kind {
        Kind::Subscribe => "confirm-subscribe",
        Kind::Reenable => "confirm-reenable",
        Kind::Forget => "confirm-forget",
        _ => "confirm-unsubscribe",
    };
    Ok(Some((l, p.language.unwrap_or(l.language), which)))
}

async fn confirm_ask(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    let (list, lang, which) = match confirm_target(&app, &token) {
        Ok(Some(t)) => t,
        Ok(None) => return fail_page(&app, None, default_lang(&app), TokenFail::Forged),
        Err(e) => return error_page(&app, e),
    };
    // Check it fully (forged, used, expired) before offering the button.
    let plan = Plan::new(app.svc.ctx(), list);
    match plan.check_pending(&token, true) {
        Ok(Ok(_)) => page(
            &app,
            Some(list),
            lang,
            StatusCode::OK,
            which,
            Some(&format!("/confirm/{token}")),
        ),
        Ok(Err(f)) => fail_page(&app, Some(list), lang, f),
        Err(e) => error_page(&app, e),
    }
}

async fn confirm_do(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    let (list, lang, which) = match confirm_target(&app, &token) {
        Ok(Some(t)) => t,
        Ok(None) => return fail_page(&app, None, default_lang(&app), TokenFail::Forged),
        Err(e) => return error_page(&app, e),
    };
    let mut plan = Plan::new(app.svc.ctx(), list);
    match plan.check_pending(&token, true) {
        Ok(Ok((id, p))) => plan.confirm(id, p, "web", None),
        Ok(Err(f)) => return fail_page(&app, Some(list), lang, f),
        Err(e) => return error_page(&app, e),
    }
    let done = match plan.results.last().map(|r| r.kind) {
        Some("subscribed") => "subscribed",
        Some("unsubscribed") => "unsubscribed",
        Some("already-member") => "subscribed",
        Some("not-member") => "unsubscribed",
        Some("reenabled") => "reenabled",
        Some("forgotten") => "forgotten",
        _ => which,
    };
    if let Err(r) = apply(&app, plan).await {
        return r;
    }
    tracing::info!(list = %list.local(), result = done, "request confirmed on the web");
    page(&app, Some(list), lang, StatusCode::OK, done, None)
}
