//! The built-in pages (`[pages]`, issue 20): sign-in, sign-up with the
//! emailed code, forgot/reset password, the second-factor step, sign-out
//! and signed-out, the "no access" page, and the sign-in redirect of
//! protected routes.
//!
//! Server-rendered HTML that works without JavaScript: plain forms posted
//! to the pages themselves, which call the same `auth` functions as the
//! JSON API. Every page carries a strict CSP (styles and images from
//! Gatehouse only, no framing, and no script except the one static file
//! `passkey.js` on the two pages with the passkey button), `X-Frame-Options:
//! DENY` and `no-store`; every form a CSRF token bound to a pre-session
//! cookie ([`csrf`]). Where the browser returns after signing in is decided
//! by [`return_to::safe_return_path`] alone.

pub mod csrf;
pub mod html;
pub mod return_to;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use crate::auth::mfa::{MfaError, PendingFactors, SecondFactor, SignInStep};
use crate::config::{Config, SignupMode};
use crate::http::App;
use crate::http::access::Served;
use crate::http::error::ApiError;
use crate::http::handlers::{append_session_cookies, read_bounded};
use crate::http::oauth;
use crate::http::response::{self, Body, append_cookie, with_body};
use crate::request::RequestContext;
use crate::request::body::RequestBody;
use html::{Templates, esc};

/// The pages' `Content-Security-Policy`: nothing runs, nothing frames them.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The CSP of the pages with the passkey button (sign-in, second factor):
/// [`CSP`] plus Gatehouse's own static script and its calls to the JSON
/// endpoints — still no inline script, no `eval`, nothing from elsewhere.
const CSP_WITH_PASSKEY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                   style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The passkey button's script (progressive enhancement, see the file).
const PASSKEY_SCRIPT: &str = include_str!("passkey.js");

/// Why the pages could not be set up at start-up.
#[derive(Debug, thiserror::Error)]
pub enum PagesError {
    #[error(transparent)]
    Template(#[from] html::TemplateError),
    #[error("pages.logo: {path}: {source}")]
    Logo {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pages: the form secret could not be read from the store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// One page, by its path under the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    SignIn,
    SignUp,
    SignUpVerify,
    Forgot,
    Reset,
    /// The second-factor step (issue 19's `POST /api/v1/user/signin/2fa`
    /// contract); shown only once second factors exist on this server.
    SecondFactor,
    SignOut,
    SignedOut,
    /// `/oidc/{name}`: start "Sign in with {name}" and send the browser to
    /// the provider (the JSON API's connect, as a redirect).
    Oidc,
    Style,
    Logo,
    /// `passkey.js`, the passkey button's script.
    Script,
    Unknown,
}

pub struct Pages {
    prefix: String,
    title: String,
    templates: Templates,
    stylesheet: Bytes,
    logo: Option<(Bytes, &'static str)>,
    csrf: csrf::Csrf,
    signup_mode: SignupMode,
    /// `[[oidc]]` provider names, one button each on the sign-in page.
    oidc_providers: Vec<String>,
}

/// Values of one form submission.
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// What a form page shows besides its fields.
#[derive(Default)]
struct View<'a> {
    error: Option<String>,
    email: &'a str,
    rd: &'a str,
    /// The second-factor page: what the pending sign-in's user can answer
    /// with (`None`: no pending sign-in, so nothing to answer).
    factors: Option<PendingFactors>,
}

impl Pages {
    /// `None` when `[pages]` is off.
    pub fn new(cfg: &Config, store: &dyn crate::store::Store) -> Result<Option<Pages>, PagesError> {
        let Some(pc) = &cfg.access.pages else {
            return Ok(None);
        };
        let templates = Templates::load(pc.templates_dir.as_deref())?;
        let stylesheet = Bytes::from(format!("{}\n{}", html::STYLE, templates.extra_style));
        let logo = match &pc.logo {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|source| PagesError::Logo {
                    path: path.display().to_string(),
                    source,
                })?;
                let kind = crate::config::logo_type(path).unwrap_or("application/octet-stream");
                Some((Bytes::from(bytes), kind))
            }
            None => None,
        };
        Ok(Some(Pages {
            prefix: pc.prefix.clone(),
            title: pc.title.clone(),
            templates,
            stylesheet,
            logo,
            csrf: csrf::Csrf::new(store.server_secret("pages-form")?, cfg.tls.is_some()),
            signup_mode: cfg.access.signup.mode,
            oidc_providers: cfg.oidc.iter().map(|p| p.name.clone()).collect(),
        }))
    }

    /// The page a canonical path names, if it is under the prefix.
    pub fn page_for(&self, canonical: &str) -> Option<Page> {
        let rest = canonical.strip_prefix(self.prefix.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        Some(match rest.trim_end_matches('/') {
            "" | "/sign-in" => Page::SignIn,
            "/sign-up" => Page::SignUp,
            "/sign-up/verify" => Page::SignUpVerify,
            "/forgot" => Page::Forgot,
            "/reset" => Page::Reset,
            "/second-factor" => Page::SecondFactor,
            "/sign-out" => Page::SignOut,
            "/signed-out" => Page::SignedOut,
            "/style.css" => Page::Style,
            "/logo" => Page::Logo,
            "/passkey.js" => Page::Script,
            other if other.starts_with("/oidc/") => Page::Oidc,
            _ => Page::Unknown,
        })
    }

    fn url(&self, page: &str) -> String {
        format!("{}/{page}", self.prefix)
    }

    /// The answer to an unauthenticated browser navigation: to the sign-in
    /// page, with the original path and query as `rd`.
    pub fn sign_in_redirect(&self, original: &http::Uri) -> Response<Body> {
        let target = original.path_and_query().map_or("/", |pq| pq.as_str());
        let rd = return_to::safe_return_path(target).unwrap_or("/");
        let location = format!("{}?rd={}", self.url("sign-in"), encode_component(rd));
        redirect(StatusCode::FOUND, &location)
    }

    /// The 403 page for a signed-in user a route does not admit.
    pub fn forbidden_page(&self, email: &str) -> Response<Body> {
        let content = format!(
            "<p>{}</p>\n<p><a class=\"button secondary\" href=\"{}\">{}</a></p>\n",
            self.templates.text("forbidden_text", &[("email", email)]),
            esc(&self.url("sign-out")),
            self.text("switch_account_button"),
        );
        self.html(StatusCode::FORBIDDEN, "forbidden_heading", &content, None)
    }

    fn text(&self, key: &str) -> String {
        self.templates.text(key, &[])
    }

    /// A complete page response with the pages' security headers.
    fn html(
        &self,
        status: StatusCode,
        heading_key: &str,
        content: &str,
        set_cookie: Option<&str>,
    ) -> Response<Body> {
        let heading = self.text(heading_key);
        let stylesheet = self.url("style.css");
        let logo = match self.logo {
            Some(_) => format!(
                "<img class=\"logo\" src=\"{}\" alt=\"\">\n",
                esc(&self.url("logo"))
            ),
            None => String::new(),
        };
        let lang = self.text("lang");
        let page = self.templates.page(
            &[
                ("lang", &lang),
                ("title", &self.title),
                ("heading", &heading),
                ("stylesheet", &stylesheet),
            ],
            content,
            &logo,
        );
        let mut resp = with_body(status, "text/html; charset=utf-8", page);
        secure_headers(resp.headers_mut());
        if let Some(c) = set_cookie {
            append_cookie(&mut resp, c);
        }
        resp
    }

    /// Serves one page (GET shows it, POST submits its form).
    pub async fn serve(
        &self,
        app: &App,
        ctx: &RequestContext,
        page: Page,
        req: Request<RequestBody>,
        served: &mut Served,
    ) -> Result<Response<Body>, ApiError> {
        let method = req.method().clone();
        let get = method == Method::GET || method == Method::HEAD;
        let post = method == Method::POST;
        match page {
            Page::Style if get => {
                Ok(self.asset(self.stylesheet.clone(), "text/css; charset=utf-8"))
            }
            Page::Script if get => Ok(self.asset(
                Bytes::from_static(PASSKEY_SCRIPT.as_bytes()),
                "text/javascript; charset=utf-8",
            )),
            Page::Logo if get => match &self.logo {
                Some((bytes, kind)) => Ok(self.asset(bytes.clone(), kind)),
                None => Ok(self.not_found()),
            },
            Page::Unknown => Ok(self.not_found()),
            Page::Oidc if get => self.start_oidc(app, ctx, &req).await,
            Page::SignedOut if get => Ok(self.html(
                StatusCode::OK,
                "signed_out_heading",
                &format!(
                    "<p role=\"status\">{}</p>\n<p><a class=\"button\" href=\"{}\">{}</a></p>\n",
                    self.text("signed_out_text"),
                    esc(&self.url("sign-in")),
                    self.text("sign_in_link"),
                ),
                None,
            )),
            Page::SignIn | Page::SignUp | Page::Forgot | Page::SignOut | Page::SecondFactor
                if get =>
            {
                let rd = query_rd(&req);
                let factors = match page {
                    Page::SecondFactor => self.pending_factors(app, &req).await?,
                    _ => None,
                };
                let view = View {
                    rd: &rd,
                    factors,
                    ..View::default()
                };
                Ok(self.form_page(page, &req, StatusCode::OK, &view))
            }
            Page::SignIn
            | Page::SignUp
            | Page::SignUpVerify
            | Page::Forgot
            | Page::Reset
            | Page::SignOut
            | Page::SecondFactor
                if post =>
            {
                self.submit(app, ctx, page, req, served).await
            }
            Page::Style | Page::Logo | Page::Script | Page::SignedOut | Page::Oidc => {
                Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" })
            }
            Page::SignUpVerify | Page::Reset => Err(ApiError::MethodNotAllowed { allow: "POST" }),
            Page::SignIn | Page::SignUp | Page::Forgot | Page::SignOut | Page::SecondFactor => {
                Err(ApiError::MethodNotAllowed {
                    allow: "GET, HEAD, POST",
                })
            }
        }
    }

    fn asset(&self, bytes: Bytes, kind: &'static str) -> Response<Body> {
        let mut resp = with_body(StatusCode::OK, kind, bytes);
        let h = resp.headers_mut();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        resp
    }

    fn not_found(&self) -> Response<Body> {
        let content = format!(
            "<p><a href=\"{}\">{}</a></p>\n",
            esc(&self.url("sign-in")),
            self.text("sign_in_link")
        );
        self.html(StatusCode::NOT_FOUND, "error_heading", &content, None)
    }

    /// A form page, bound to the request's pre-session cookie (set now if
    /// the browser has none).
    fn form_page<B>(
        &self,
        page: Page,
        req: &Request<B>,
        status: StatusCode,
        view: &View<'_>,
    ) -> Response<Body> {
        let binding = self.csrf.binding(req.headers());
        let token = self.csrf.token(&binding);
        let (heading, content) = self.form_content(page, &token, view);
        let mut resp = self.html(status, heading, &content, binding.set_cookie.as_deref());
        if has_passkey_button(page, view) {
            resp.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP_WITH_PASSKEY),
            );
        }
        resp
    }

    /// The passkey button, hidden until `passkey.js` finds WebAuthn in the
    /// browser (without JavaScript it never shows), and the script.
    fn passkey_section(&self, c: &mut String, or: bool, label: &str) {
        c.push_str("<div id=\"passkey\" hidden>\n");
        if or {
            c.push_str(&format!("<p class=\"or\">{}</p>\n", self.text("or")));
        }
        c.push_str(&format!(
            "<p><button type=\"button\" id=\"passkey-button\" class=\"secondary\" data-error=\"{}\">{}</button></p>\n</div>\n<script src=\"{}\" defer></script>\n",
            esc(&self.text("passkey_error")),
            self.text(label),
            esc(&self.url("passkey.js")),
        ));
    }

    fn form_content(&self, page: Page, token: &str, view: &View<'_>) -> (&'static str, String) {
        let mut c = String::new();
        let described = if let Some(message) = &view.error {
            c.push_str(&format!(
                "<div id=\"form-error\" class=\"error\" role=\"alert\">{}</div>\n",
                esc(message)
            ));
            " aria-describedby=\"form-error\""
        } else {
            if has_passkey_button(page, view) {
                // Empty and hidden: where passkey.js announces a failure.
                c.push_str("<div id=\"form-error\" class=\"error\" role=\"alert\" hidden></div>\n");
            }
            ""
        };
        let open_form = |c: &mut String, action: &str| {
            c.push_str(&format!(
                "<form method=\"post\" action=\"{}\">\n<input type=\"hidden\" name=\"csrf\" value=\"{}\">\n<input type=\"hidden\" name=\"rd\" value=\"{}\">\n",
                esc(&self.url(action)),
                esc(token),
                esc(view.rd),
            ));
        };
        let field = |c: &mut String, id: &str, label: &str, kind: &str, auto: &str, value: &str| {
            c.push_str(&format!(
                "<label for=\"{id}\">{}</label>\n<input id=\"{id}\" name=\"{id}\" type=\"{kind}\" autocomplete=\"{auto}\" required{described}{}>\n",
                self.text(label),
                if value.is_empty() {
                    String::new()
                } else {
                    format!(" value=\"{}\"", esc(value))
                },
            ));
        };
        let button = |c: &mut String, label: &str| {
            c.push_str(&format!(
                "<button type=\"submit\">{}</button>\n</form>\n",
                self.text(label)
            ));
        };
        let rd_query = if view.rd.is_empty() {
            String::new()
        } else {
            format!("?rd={}", encode_component(view.rd))
        };
        let link = |page: &str, label: &str| {
            format!(
                "<a href=\"{}{}\">{}</a>",
                esc(&self.url(page)),
                esc(&rd_query),
                self.text(label)
            )
        };
        let heading = match page {
            Page::SignIn => {
                open_form(&mut c, "sign-in");
                field(
                    &mut c,
                    "email",
                    "email_label",
                    "email",
                    "username",
                    view.email,
                );
                field(
                    &mut c,
                    "password",
                    "password_label",
                    "password",
                    "current-password",
                    "",
                );
                button(&mut c, "sign_in_button");
                // Other ways to sign in: OIDC providers (and, once issue
                // 19's [mfa] is configured, a passkey button here too).
                if !self.oidc_providers.is_empty() {
                    c.push_str(&format!("<p class=\"or\">{}</p>\n", self.text("or")));
                }
                for name in &self.oidc_providers {
                    c.push_str(&format!(
                        "<p><a class=\"button secondary\" href=\"{}{}\">{}</a></p>\n",
                        esc(&self.url(&format!("oidc/{name}"))),
                        esc(&rd_query),
                        self.templates.text("oidc_button", &[("provider", name)]),
                    ));
                }
                self.passkey_section(&mut c, self.oidc_providers.is_empty(), "passkey_button");
                c.push_str("<p class=\"links\">");
                c.push_str(&link("forgot", "forgot_link"));
                if self.signup_mode != SignupMode::Closed {
                    c.push_str(&link("sign-up", "sign_up_link"));
                }
                c.push_str("</p>\n");
                "sign_in_heading"
            }
            Page::SignUp => {
                c.push_str(&format!("<p>{}</p>\n", self.text("sign_up_intro")));
                open_form(&mut c, "sign-up");
                field(&mut c, "email", "email_label", "email", "email", view.email);
                button(&mut c, "send_code_button");
                c.push_str(&format!(
                    "<p class=\"links\">{}</p>\n",
                    link("sign-in", "sign_in_link")
                ));
                "sign_up_heading"
            }
            Page::Forgot => {
                c.push_str(&format!("<p>{}</p>\n", self.text("forgot_intro")));
                open_form(&mut c, "forgot");
                field(
                    &mut c,
                    "email",
                    "email_label",
                    "email",
                    "username",
                    view.email,
                );
                button(&mut c, "send_code_button");
                c.push_str(&format!(
                    "<p class=\"links\">{}</p>\n",
                    link("sign-in", "sign_in_link")
                ));
                "forgot_heading"
            }
            Page::SignUpVerify | Page::Reset => {
                // The step after an emailed code: the code and a new password.
                let (intro, action, submit, back, back_label, heading) = match page {
                    Page::Reset => (
                        "reset_intro",
                        "reset",
                        "reset_button",
                        "forgot",
                        "forgot_link",
                        "reset_heading",
                    ),
                    _ => (
                        "verify_intro",
                        "sign-up/verify",
                        "create_button",
                        "sign-up",
                        "sign_up_link",
                        "verify_heading",
                    ),
                };
                c.push_str(&format!(
                    "<p>{}</p>\n",
                    self.templates.text(intro, &[("email", view.email)])
                ));
                open_form(&mut c, action);
                c.push_str(&format!(
                    "<input type=\"hidden\" name=\"email\" value=\"{}\">\n",
                    esc(view.email)
                ));
                field(&mut c, "code", "code_label", "text", "one-time-code", "");
                field(
                    &mut c,
                    "password",
                    "new_password_label",
                    "password",
                    "new-password",
                    "",
                );
                button(&mut c, submit);
                c.push_str(&format!(
                    "<p class=\"links\">{}</p>\n",
                    link(back, back_label)
                ));
                heading
            }
            Page::SecondFactor => {
                // Only the answers this user has: the code field (TOTP or
                // a recovery code) with TOTP, the button with a passkey.
                match view.factors {
                    Some(f) if f.totp => {
                        c.push_str(&format!("<p>{}</p>\n", self.text("second_factor_intro")));
                        open_form(&mut c, "second-factor");
                        field(
                            &mut c,
                            "code",
                            "second_factor_label",
                            "text",
                            "one-time-code",
                            "",
                        );
                        button(&mut c, "continue_button");
                        if f.passkey {
                            self.passkey_section(&mut c, true, "passkey_second_factor_button");
                        }
                    }
                    Some(f) if f.passkey => {
                        c.push_str(&format!(
                            "<p>{}</p>\n",
                            self.text("second_factor_passkey_intro")
                        ));
                        // No field to fill in; the form only carries the
                        // checked rd that passkey.js returns to.
                        open_form(&mut c, "second-factor");
                        c.push_str("</form>\n");
                        self.passkey_section(&mut c, false, "passkey_button");
                    }
                    _ => {
                        if view.error.is_none() {
                            c.push_str(&format!(
                                "<div id=\"form-error\" class=\"error\" role=\"alert\">{}</div>\n",
                                esc(&MfaError::PendingMissing.to_string())
                            ));
                        }
                        c.push_str(&format!(
                            "<p><a class=\"button\" href=\"{}{}\">{}</a></p>\n",
                            esc(&self.url("sign-in")),
                            esc(&rd_query),
                            self.text("sign_in_link")
                        ));
                    }
                }
                "second_factor_heading"
            }
            Page::SignOut
            | Page::SignedOut
            | Page::Oidc
            | Page::Style
            | Page::Logo
            | Page::Script
            | Page::Unknown => {
                open_form(&mut c, "sign-out");
                button(&mut c, "sign_out_button");
                "sign_out_heading"
            }
        };
        (heading, c)
    }

    /// Handles a form submission: the CSRF token first, then the same
    /// `auth` call the JSON API makes.
    async fn submit(
        &self,
        app: &App,
        ctx: &RequestContext,
        page: Page,
        req: Request<RequestBody>,
        served: &mut Served,
    ) -> Result<Response<Body>, ApiError> {
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, ());
        let form = read_form(app, &req, body).await?;
        let rd = return_to::safe_return_path(form.get("rd")).unwrap_or("");
        let email = form.get("email");
        let factors = match page {
            Page::SecondFactor => self.pending_factors(app, &req).await?,
            _ => None,
        };
        let shown = |page: Page, error: Option<String>, status: StatusCode| {
            let view = View {
                error,
                email,
                rd,
                factors,
            };
            self.form_page(page, &req, status, &view)
        };
        if ctx.site == crate::request::Site::Foreign
            || !self.csrf.check(req.headers(), form.get("csrf"))
        {
            return Ok(shown(
                page,
                Some(self.text("error_form_expired")),
                StatusCode::FORBIDDEN,
            ));
        }
        let client = ctx.client_info(app, req.headers());
        let back = if rd.is_empty() { "/" } else { rd };
        let outcome = match page {
            Page::SignIn => {
                let previous = app.auth.sessions.token_hash_from(req.headers());
                app.auth
                    .sign_in(email, form.get("password"), previous, &client)
                    .await
                    .map(|step| match step {
                        SignInStep::Done(signed_in) => self.signed_in(app, &signed_in, back),
                        SignInStep::SecondFactor { pending_token } => {
                            self.to_second_factor(app, &pending_token, back)
                        }
                    })
            }
            Page::SignUp => app
                .auth
                .send_otp(email, &client)
                .await
                .map(|()| shown(Page::SignUpVerify, None, StatusCode::OK)),
            Page::SignUpVerify => app
                .auth
                .verify(email, &code(&form), form.get("password"), &client)
                .await
                .map(|signed_in| self.signed_in(app, &signed_in, back)),
            Page::Forgot => app
                .auth
                .forgot_password(email, &client)
                .await
                .map(|()| shown(Page::Reset, None, StatusCode::OK)),
            Page::Reset => app
                .auth
                .reset_password(email, &code(&form), form.get("password"), &client)
                .await
                .map(|signed_in| self.signed_in(app, &signed_in, back)),
            Page::SignOut => {
                let token = app.auth.sessions.token_hash_from(req.headers());
                if let Some(t) = &token
                    && let Ok(Some(who)) = app.auth.sessions.authenticate_hash(t)
                {
                    served.user = Some(who.user_id);
                }
                app.auth.logout(token).await.map(|()| {
                    let mut resp = redirect(StatusCode::SEE_OTHER, &self.url("signed-out"));
                    append_cookie(&mut resp, &app.auth.sessions.clear_cookie());
                    resp
                })
            }
            Page::SecondFactor => {
                // One field takes either answer: six digits are a TOTP
                // code, anything else is tried as a recovery code.
                let typed = code(&form);
                let answer = if typed.len() == 6 && typed.bytes().all(|b| b.is_ascii_digit()) {
                    SecondFactor::Code(&typed)
                } else {
                    SecondFactor::RecoveryCode(&typed)
                };
                let pending = app.auth.mfa.pending_token(req.headers());
                match app
                    .auth
                    .complete_second_factor(pending, answer, &client)
                    .await
                {
                    Ok(signed_in) => {
                        let mut resp = self.signed_in(app, &signed_in, back);
                        append_cookie(&mut resp, &app.auth.mfa.clear_pending_cookie());
                        return Ok(resp);
                    }
                    Err(e) => {
                        let reported = ApiError::from(e).report();
                        // Asked again with what is left: a void sign-in
                        // offers only the way back to the password.
                        let view = View {
                            error: Some(reported.message.clone()),
                            email,
                            rd,
                            factors: self.pending_factors(app, &req).await?,
                        };
                        let mut resp = self.form_page(page, &req, reported.status, &view);
                        reported.stamp(&mut resp);
                        return Ok(resp);
                    }
                }
            }
            Page::SignedOut
            | Page::Oidc
            | Page::Style
            | Page::Logo
            | Page::Script
            | Page::Unknown => {
                return Ok(self.not_found());
            }
        };
        match outcome {
            Ok(resp) => Ok(resp),
            Err(e) => {
                // Logged and counted as the JSON answer would be.
                let reported = ApiError::from(e).report();
                // A wrong code keeps the user on the step that asks for it.
                let mut resp = shown(page, Some(reported.message.clone()), reported.status);
                reported.stamp(&mut resp);
                Ok(resp)
            }
        }
    }

    /// "Sign in with NAME": the same start as the JSON connect endpoint
    /// (throttled per address, browser-binding cookie), answered with a
    /// redirect to the provider; its callback returns to `rd`.
    async fn start_oidc<B>(
        &self,
        app: &App,
        ctx: &RequestContext,
        req: &Request<B>,
    ) -> Result<Response<Body>, ApiError> {
        oauth::throttle_connect(app, &ctx.client_info(app, req.headers()))?;
        let name = req
            .uri()
            .path()
            .rsplit('/')
            .find(|s| !s.is_empty())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !self.oidc_providers.contains(&name) {
            return Ok(self.not_found());
        }
        let rd = query_rd(req);
        let existing =
            crate::auth::sessions::find_cookie(req.headers(), crate::oidc::BINDING_COOKIE);
        let started = app
            .oidc
            .connect(&name, (!rd.is_empty()).then_some(rd.as_str()), existing)
            .await?;
        let mut resp = redirect(StatusCode::SEE_OTHER, &started.auth_url);
        append_cookie(&mut resp, &oauth::binding_cookie(app, &started.binding));
        Ok(resp)
    }

    /// What the request's pending sign-in can be completed with.
    async fn pending_factors<B>(
        &self,
        app: &App,
        req: &Request<B>,
    ) -> Result<Option<PendingFactors>, ApiError> {
        let pending = app.auth.mfa.pending_token(req.headers());
        Ok(app.auth.pending_factors(pending).await?)
    }

    /// A right password of a user with a second factor: the pending
    /// cookie, and on to the step that asks for the code (keeping `rd`).
    fn to_second_factor(&self, app: &App, pending_token: &str, back: &str) -> Response<Body> {
        let location = format!(
            "{}?rd={}",
            self.url("second-factor"),
            encode_component(back)
        );
        let mut resp = redirect(StatusCode::SEE_OTHER, &location);
        append_cookie(&mut resp, &app.auth.mfa.set_pending_cookie(pending_token));
        resp
    }

    /// Session and device cookies, then back to where the user was going.
    fn signed_in(
        &self,
        app: &App,
        signed_in: &crate::auth::SignedIn,
        back: &str,
    ) -> Response<Body> {
        let mut resp = redirect(StatusCode::SEE_OTHER, back);
        append_session_cookies(&mut resp, app, signed_in);
        resp
    }
}

/// Whether the page offers "Sign in with a passkey" (and so loads its
/// script): always on sign-in, on the second step to users with a passkey.
fn has_passkey_button(page: Page, view: &View<'_>) -> bool {
    match page {
        Page::SignIn => true,
        Page::SecondFactor => view.factors.is_some_and(|f| f.passkey),
        Page::SignUp
        | Page::SignUpVerify
        | Page::Forgot
        | Page::Reset
        | Page::SignOut
        | Page::SignedOut
        | Page::Oidc
        | Page::Style
        | Page::Logo
        | Page::Script
        | Page::Unknown => false,
    }
}

/// The code field, without the spaces people type into codes.
fn code(form: &Form) -> String {
    form.get("code")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

fn query_rd<B>(req: &Request<B>) -> String {
    let rd = crate::oidc::form_pairs(req.uri().query().unwrap_or(""))
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v)
        .unwrap_or_default();
    return_to::safe_return_path(&rd).unwrap_or("").to_string()
}

fn secure_headers(h: &mut http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A redirect with the pages' headers. Every location is a checked
/// same-origin path, a page URL or the provider's authorization URL.
fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut resp = response::redirect(status, location);
    secure_headers(resp.headers_mut());
    resp
}

/// Percent-encodes a query component (RFC 3986 unreserved kept).
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a bounded `application/x-www-form-urlencoded` body.
async fn read_form(app: &App, req: &Request<()>, body: RequestBody) -> Result<Form, ApiError> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(ApiError::BadBody(
            "Content-Type must be application/x-www-form-urlencoded".into(),
        ));
    }
    let bytes = read_bounded(app, body).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::BadBody("The form is not UTF-8".into()))?;
    Ok(Form(crate::oidc::form_pairs(text).take(32).collect()))
}

#[cfg(test)]
mod tests {
    use super::encode_component;

    #[test]
    fn rd_is_encoded_as_one_query_value() {
        assert_eq!(
            encode_component("/wiki/a?b=c&d=e"),
            "/wiki/a%3Fb%3Dc%26d%3De"
        );
        assert_eq!(encode_component("/x y"), "/x%20y");
    }
}
