//! The web endpoint: RFC 8058 one-click unsubscribe and confirmation links.
//!
//! - `POST /u/TOKEN` removes the member the token names, at once, with no further question
//!   (this is what mail providers call with `List-Unsubscribe=One-Click`).
//! - `GET /u/TOKEN` shows a page with one button that makes that POST; a GET never changes
//!   anything (link scanners and prefetchers follow GETs).
//! - `GET /confirm/TOKEN` shows a page with a button; `POST /confirm/TOKEN` confirms.
//! - `GET /m/TOKEN` (the "stop receiving this thread" link in every copy's footer) shows a
//!   page with a button; `POST /m/TOKEN` mutes the thread for the member the token names
//!   (`do=unmute` unmutes it), and the page it answers offers the opposite button.
//! - `GET /archive/<list>/...` serves the public archives (`[archive] dir`), with downloads
//!   always as attachments.
//! - `GET /members/<list>/...` serves a members-only archive (`archive = "private"`) to
//!   holders of a session cookie, anyone else is sent to `GET /login/<list>`: a form for an
//!   address. `POST /login/<list>` mails a one-time link to that address if it is a member
//!   and answers the same page either way, at once: the membership check and the link are
//!   made after the answer, so its timing tells nothing either. `GET /login/<list>/TOKEN`
//!   shows a button, `POST` uses the link (once, within the hour) and sets the cookie (HttpOnly,
//!   SameSite=Lax, `Secure` behind https, valid `archive_session_days`, bound to the
//!   member: leaving or being forgotten ends it).
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

/// The router's state: each request takes the services current when it arrives (SIGHUP)
/// and keeps them to its end.
struct Shared {
    live: crate::Live,
    wake_out: Arc<Notify>,
}

impl Shared {
    fn current(&self) -> Arc<App> {
        Arc::new(App {
            svc: self.live.svc(),
            wake_out: self.wake_out.clone(),
        })
    }
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    live: crate::Live,
    wake_out: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // Only the public archives: private ones are served to members only (not here).
    let archive_root = live.svc().cfg.archive_dir();
    // Limits are the start's (like the listen address).
    let limits = live.svc().cfg.http.clone();
    let app = Arc::new(Shared { live, wake_out });
    let router = Router::new()
        .route("/", get(index))
        .route("/u/{token}", get(unsubscribe_ask).post(unsubscribe_do))
        .route("/confirm/{token}", get(confirm_ask).post(confirm_do))
        .route("/m/{token}", get(mute_ask).post(mute_do))
        .route("/login/{list}", get(login_form).post(login_send))
        .route("/login/{list}/{token}", get(login_ask).post(login_do))
        .route("/members/{list}", get(members_root))
        .route("/members/{list}/", get(members_file))
        .route("/members/{list}/{*path}", get(members_file))
        .nest_service(
            "/archive",
            tower_http::services::ServeDir::new(archive_root)
                .append_index_html_on_directories(true),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn(archive_headers))
        .with_state(app);
    let (max, per_ip, idle) = limits.map_or_else(
        || {
            use crate::config as c;
            (
                c::default_http_max_connections(),
                c::default_http_max_connections_per_ip(),
                c::default_http_idle_timeout(),
            )
        },
        |h| (h.max_connections, h.max_connections_per_ip, h.idle_timeout),
    );
    let listener = crate::limits::Limited::new(listener, max, per_ip, idle);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await
}

/// Headers for the archive's files: the same strict policy as its pages' own meta tag, and
/// downloads (attachments, messages, mbox) never shown inline, whatever their name says.
async fn archive_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    // Decided on the path as the file server will read it: percent-decoded (`/%61/` is
    // `/a/`), repeated slashes folded, any case.
    let path = normal_path(req.uri().path());
    let asked = req.uri().clone();
    let mut r = next.run(req).await;
    if !path.starts_with("/archive/") && !path.starts_with("/members/") {
        return r;
    }
    // The file server answers a folder asked without its slash (`/archive/forum`) with a
    // redirect to the path it was handed, which lacks the `/archive` it is mounted under:
    // point it at the folder as asked instead.
    if path.starts_with("/archive/") && r.status().is_redirection() {
        let to = match asked.query() {
            Some(q) => format!("{}/?{q}", asked.path()),
            None => format!("{}/", asked.path()),
        };
        if let Ok(v) = HeaderValue::from_str(&to) {
            r.headers_mut().insert(header::LOCATION, v);
        }
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
    let download = path.contains("/a/")
        || path.ends_with(".eml")
        || path.ends_with(".mbox")
        || path.ends_with(".mbox.gz");
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

/// A request path as a file server resolves it, for deciding on its headers.
fn normal_path(raw: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    let mut out = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        let c = if c == '\\' { '/' } else { c };
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c.to_ascii_lowercase());
    }
    out
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
    page_with(
        app,
        list,
        lang,
        status,
        name,
        action,
        minijinja::context! {},
    )
}

/// [`page`] with more values for the template.
fn page_with(
    app: &App,
    list: Option<&ListConfig>,
    lang: Language,
    status: StatusCode,
    name: &str,
    action: Option<&str>,
    extra: minijinja::Value,
) -> Response {
    let vars = minijinja::value::merge_maps([
        minijinja::context! { page => name, action_url => action },
        extra,
    ]);
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

async fn index(State(shared): State<Arc<Shared>>) -> Response {
    let app = shared.current();
    page(
        &app,
        None,
        default_lang(&app),
        StatusCode::OK,
        "index",
        None,
    )
}

async fn not_found(State(shared): State<Arc<Shared>>) -> Response {
    let app = shared.current();
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

async fn unsubscribe_ask(State(shared): State<Arc<Shared>>, Path(token): Path<String>) -> Response {
    let app = shared.current();
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

async fn unsubscribe_do(State(shared): State<Arc<Shared>>, Path(token): Path<String>) -> Response {
    let app = shared.current();
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
/// The commit runs on the blocking pool (it fsyncs). A token that was used meanwhile (the
/// same link clicked twice, or confirmed by mail at the same moment) applies nothing and
/// gets the "already used" page.
async fn apply(app: &App, plan: Plan<'_>) -> Result<(), Response> {
    let (list, lang) = (plan.list, plan.language());
    let (changes, mail) = (plan.changes, plan.mail);
    let store = app.svc.store.clone();
    let r = tokio::task::spawn_blocking(move || {
        store.commit(changes, mail)?;
        store.flush()
    })
    .await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(crate::store::StoreError::AlreadyUsed { .. })) => {
            return Err(fail_page(app, Some(list), lang, TokenFail::Used))
        }
        Ok(Err(e)) => return Err(error_page(app, e)),
        Err(e) => return Err(error_page(app, e)),
    }
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

async fn confirm_ask(State(shared): State<Arc<Shared>>, Path(token): Path<String>) -> Response {
    let app = shared.current();
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

async fn confirm_do(State(shared): State<Arc<Shared>>, Path(token): Path<String>) -> Response {
    let app = shared.current();
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

// ---- muting a thread ---------------------------------------------------------------------

/// What a thread token names, when it is one of ours and its member is still on the list.
struct MuteTarget<'a> {
    list: &'a ListConfig,
    lang: Language,
    addr: String,
    thread: u64,
}

fn mute_target<'a>(app: &'a App, token: &str) -> crate::store::Result<Option<MuteTarget<'a>>> {
    let Some(t) = crate::tokens::ThreadToken::parse(token) else {
        return Ok(None);
    };
    let Some((list, m)) = app.svc.store.member_by_uid(t.member)? else {
        return Ok(None);
    };
    if !app.svc.secret.verify_thread(&t, &list, &m.address) {
        return Ok(None);
    }
    Ok(app.svc.cfg.list(&list).map(|l| MuteTarget {
        list: l,
        lang: m.language.unwrap_or(l.language),
        addr: m.address,
        thread: t.thread,
    }))
}

/// The page for a thread's state: muted (with a button to unmute) or not (with one to mute).
fn mute_page(app: &App, t: &MuteTarget, token: &str, muted: bool, name: &str) -> Response {
    let subject = match app.svc.store.thread_info(t.list.key(), t.thread) {
        Ok(i) => i.map(|i| i.subject),
        Err(e) => return error_page(app, e),
    };
    page_with(
        app,
        Some(t.list),
        t.lang,
        StatusCode::OK,
        name,
        Some(&format!("/m/{token}")),
        minijinja::context! { thread_subject => subject, muted },
    )
}

async fn mute_ask(State(shared): State<Arc<Shared>>, Path(token): Path<String>) -> Response {
    let app = shared.current();
    let t = match mute_target(&app, &token) {
        Ok(Some(t)) => t,
        // Never valid, or no longer a member: the same page either way.
        Ok(None) => return fail_page(&app, None, default_lang(&app), TokenFail::Forged),
        Err(e) => return error_page(&app, e),
    };
    match app.svc.store.is_muted(t.list.key(), t.thread, &t.addr) {
        Ok(true) => mute_page(&app, &t, &token, true, "muted"),
        Ok(false) => mute_page(&app, &t, &token, false, "mute-ask"),
        Err(e) => error_page(&app, e),
    }
}

/// `POST /m/TOKEN`: mutes, or with the form field `do=unmute` unmutes. Both are idempotent.
async fn mute_do(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let app = shared.current();
    let t = match mute_target(&app, &token) {
        Ok(Some(t)) => t,
        Ok(None) => return fail_page(&app, None, default_lang(&app), TokenFail::Forged),
        Err(e) => return error_page(&app, e),
    };
    let unmute = body
        .split(|&b| b == b'&')
        .any(|f| f.eq_ignore_ascii_case(b"do=unmute"));
    let (list, addr) = (t.list.key().to_string(), t.addr.clone());
    let change = if unmute {
        crate::store::Change::Unmute {
            list,
            addr,
            thread: t.thread,
        }
    } else {
        crate::store::Change::Mute {
            list,
            addr,
            thread: t.thread,
            at_ms: crate::clock::now_ms(),
        }
    };
    let mut plan = Plan::new(app.svc.ctx(), t.list);
    plan.changes.push(change);
    if let Err(r) = apply(&app, plan).await {
        return r;
    }
    tracing::info!(
        list = %t.list.local(),
        thread = format!("{:016x}", t.thread),
        "{}",
        if unmute { "member unmuted a thread on the web" } else { "member muted a thread on the web" }
    );
    if unmute {
        mute_page(&app, &t, &token, false, "unmuted")
    } else {
        mute_page(&app, &t, &token, true, "muted")
    }
}

// ---- members-only archives ---------------------------------------------------------------

/// The list `name` when its archive is members-only.
fn private_list<'a>(app: &'a App, name: &str) -> Option<&'a ListConfig> {
    app.svc
        .cfg
        .list(name)
        .filter(|l| l.archive == crate::config::ArchiveMode::Private)
}

fn cookie_name(list: &ListConfig) -> String {
    format!(
        "vb_{}",
        list.local()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    )
}

/// The member a request's session cookie is for, when valid now.
fn session_member(app: &App, list: &ListConfig, headers: &axum::http::HeaderMap) -> Option<u64> {
    let name = cookie_name(list);
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())?;
    let t = Token::parse(&value).filter(|t| t.kind == Kind::Session)?;
    if t.expired(crate::clock::now_ms()) {
        return None;
    }
    let (l, m) = app.svc.store.member_by_uid(t.id).ok()??;
    (l.eq_ignore_ascii_case(list.key()) && app.svc.secret.verify(&t, list.key(), &m.address))
        .then_some(t.id)
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn members_root(State(shared): State<Arc<Shared>>, Path(list): Path<String>) -> Response {
    let app = shared.current();
    match private_list(&app, &list) {
        Some(l) => redirect(&format!("/members/{}/", l.local())),
        None => not_found(State(shared)).await,
    }
}

async fn members_file(
    State(shared): State<Arc<Shared>>,
    Path(params): Path<Vec<(String, String)>>,
    req: axum::extract::Request,
) -> Response {
    let app = shared.current();
    use tower::ServiceExt;
    let list = params
        .iter()
        .find(|(k, _)| k == "list")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let rest = params
        .iter()
        .find(|(k, _)| k == "path")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let Some(l) = private_list(&app, &list) else {
        return not_found(State(shared)).await;
    };
    if session_member(&app, l, req.headers()).is_none() {
        return redirect(&format!("/login/{}", l.local()));
    }
    let Some(dir) = app.svc.cfg.list_archive_dir(l) else {
        return not_found(State(shared)).await;
    };
    // The file below the list's private folder; ServeDir refuses `..` and the like.
    let uri = format!("/{rest}");
    let Ok(uri) = uri.parse::<axum::http::Uri>() else {
        return not_found(State(shared)).await;
    };
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    let sub = axum::extract::Request::from_parts(parts, body);
    let serve = tower_http::services::ServeDir::new(dir).append_index_html_on_directories(true);
    match serve.oneshot(sub).await {
        Ok(r) => {
            let mut r = r.map(axum::body::Body::new).into_response();
            // A folder without its slash: redirected within the members' archive.
            if r.status().is_redirection() {
                let to = format!("/members/{}/{}/", l.local(), rest.trim_end_matches('/'));
                if let Ok(v) = HeaderValue::from_str(&to) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
            }
            // Members' pages are nobody else's: never in a shared cache.
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            );
            r
        }
        Err(e) => error_page(&app, e),
    }
}

async fn login_form(State(shared): State<Arc<Shared>>, Path(list): Path<String>) -> Response {
    let app = shared.current();
    let Some(l) = private_list(&app, &list) else {
        return not_found(State(shared)).await;
    };
    page(
        &app,
        Some(l),
        l.language,
        StatusCode::OK,
        "login",
        Some(&format!("/login/{}", l.local())),
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    address: String,
}

/// Mails a login link when the address is a member; the page is the same either way, and
/// so is the time it takes to answer: the answer waits for no store work at all. Whether
/// the address is a member, and for a member the link's plan, its durable commit and the
/// wake-up of delivery, are done afterwards by [`send_login_link`].
async fn login_send(
    State(shared): State<Arc<Shared>>,
    Path(list): Path<String>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let app = shared.current();
    let Some(l) = private_list(&app, &list) else {
        return not_found(State(shared)).await;
    };
    let addr = form.address.trim().to_string();
    if crate::config::valid_address(&addr) {
        tokio::spawn(send_login_link(app.clone(), l.key().to_string(), addr));
    }
    page(
        &app,
        Some(l),
        l.language,
        StatusCode::OK,
        "login-sent",
        None,
    )
}

/// The work behind the login form, after it was answered: for a member of `list`, a
/// one-time link queued durably and delivery woken; for anyone else nothing. Failures are
/// logged (without the address); the person asking has had their answer already.
async fn send_login_link(app: Arc<App>, list: String, addr: String) {
    let svc = app.svc.clone();
    let log_list = list.clone();
    let work = tokio::task::spawn_blocking(move || -> crate::store::Result<bool> {
        let Some(l) = svc.cfg.list(&list) else {
            return Ok(false);
        };
        let mut plan = Plan::new(svc.ctx(), l);
        if !plan.is_member(&addr)? {
            return Ok(false);
        }
        plan.archive_login(&addr)?;
        let (changes, mail) = (plan.changes, plan.mail);
        let queued = !mail.is_empty();
        svc.store.commit(changes, mail)?;
        svc.store.flush()?;
        Ok(queued)
    })
    .await;
    match work {
        Ok(Ok(true)) => app.wake_out.notify_one(),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => {
            tracing::error!(list = %log_list, error = %e, "cannot queue an archive login link")
        }
        Err(e) => {
            tracing::error!(list = %log_list, error = %e, "archive login link task failed")
        }
    }
}

/// The pending login a token names, when still usable.
fn login_pending(
    app: &App,
    l: &ListConfig,
    token: &str,
) -> Result<(u64, crate::store::Pending), TokenFail> {
    let t = Token::parse(token)
        .filter(|t| t.kind == Kind::Login)
        .ok_or(TokenFail::Forged)?;
    let p = app
        .svc
        .store
        .pending(t.id)
        .ok()
        .flatten()
        .filter(|p| p.action == "login")
        .ok_or(TokenFail::Forged)?;
    if !p.list.eq_ignore_ascii_case(l.key()) || !app.svc.secret.verify(&t, &p.list, &p.address) {
        return Err(TokenFail::Forged);
    }
    if p.used_ms.is_some() {
        return Err(TokenFail::Used);
    }
    let now = crate::clock::now_ms();
    if t.expired(now) || p.expires_ms < now {
        return Err(TokenFail::Expired);
    }
    Ok((t.id, p))
}

async fn login_ask(
    State(shared): State<Arc<Shared>>,
    Path((list, token)): Path<(String, String)>,
) -> Response {
    let app = shared.current();
    let Some(l) = private_list(&app, &list) else {
        return not_found(State(shared)).await;
    };
    match login_pending(&app, l, &token) {
        Ok(_) => page(
            &app,
            Some(l),
            l.language,
            StatusCode::OK,
            "login-confirm",
            Some(&format!("/login/{}/{token}", l.local())),
        ),
        Err(f) => fail_page(&app, Some(l), l.language, f),
    }
}

async fn login_do(
    State(shared): State<Arc<Shared>>,
    Path((list, token)): Path<(String, String)>,
) -> Response {
    let app = shared.current();
    let Some(l) = private_list(&app, &list) else {
        return not_found(State(shared)).await;
    };
    let (id, p) = match login_pending(&app, l, &token) {
        Ok(x) => x,
        Err(f) => return fail_page(&app, Some(l), l.language, f),
    };
    let member = match app.svc.store.member(l.key(), &p.address) {
        Ok(Some(m)) if m.uid != 0 => m,
        Ok(_) => return fail_page(&app, Some(l), l.language, TokenFail::NotMember),
        Err(e) => return error_page(&app, e),
    };
    let mut plan = Plan::new(app.svc.ctx(), l);
    plan.changes.push(crate::store::Change::UsePending {
        id,
        at_ms: crate::clock::now_ms(),
    });
    if let Err(r) = apply(&app, plan).await {
        return r;
    }
    let days = i64::from(l.archive_session_days.max(1));
    let expires_ms = crate::clock::now_ms() + days * 86_400_000;
    let expires_s = u32::try_from(expires_ms / 1000).unwrap_or(u32::MAX);
    let session = app.svc.secret.issue(
        Kind::Session,
        member.uid,
        expires_s,
        l.key(),
        &member.address,
    );
    let secure = app
        .svc
        .cfg
        .base_url()
        .is_some_and(|u| u.starts_with("https://"));
    let cookie = cookie::Cookie::build((cookie_name(l), session))
        .path(format!("/members/{}/", l.local()))
        .max_age(cookie::time::Duration::days(days))
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .secure(secure)
        .build()
        .to_string();
    tracing::info!(list = %l.local(), "member logged in to the archive");
    let mut r = redirect(&format!("/members/{}/", l.local()));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
