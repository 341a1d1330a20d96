//! HTML output for the pages: one small escape function (tested below) and
//! the layout/text templates, built in or read from `[pages]
//! templates_dir` at start-up. Templates substitute `{{name}}`; every value
//! is escaped except `{{content}}`, which is markup this module built.

use std::collections::BTreeMap;
use std::path::Path;

/// Escapes text for HTML element content and double- or single-quoted
/// attribute values.
pub fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
}

/// [`escape`] into a new string.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    escape(text, &mut out);
    out
}

pub const LAYOUT: &str = r#"<!DOCTYPE html>
<html lang="{{lang}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>{{heading}} – {{title}}</title>
<link rel="stylesheet" href="{{stylesheet}}">
</head>
<body>
<main class="card" aria-labelledby="page-heading">
{{logo}}<p class="product">{{title}}</p>
<h1 id="page-heading">{{heading}}</h1>
{{content}}
</main>
</body>
</html>
"#;

pub const STYLE: &str = include_str!("style.css");

/// The texts a page shows, by key; `texts.toml` in the templates directory
/// may replace any of them (unknown keys are refused).
pub const TEXTS: &[(&str, &str)] = &[
    ("lang", "en"),
    ("sign_in_heading", "Sign in"),
    ("sign_in_button", "Sign in"),
    ("email_label", "Email address"),
    ("password_label", "Password"),
    ("new_password_label", "New password"),
    ("code_label", "Code from the email"),
    ("forgot_link", "Forgot your password?"),
    ("sign_up_link", "Create an account"),
    ("sign_in_link", "Back to sign in"),
    ("oidc_button", "Sign in with {{provider}}"),
    ("or", "or"),
    ("sign_up_heading", "Create an account"),
    (
        "sign_up_intro",
        "Enter your email address. We will send you a code to confirm it.",
    ),
    ("send_code_button", "Send code"),
    ("verify_heading", "Check your email"),
    (
        "verify_intro",
        "If this address may sign up, a code is on its way to {{email}}. Enter it with the password you want.",
    ),
    ("create_button", "Create account"),
    ("resend_link", "Send a new code"),
    ("forgot_heading", "Reset your password"),
    (
        "forgot_intro",
        "Enter your email address. If it has an account, we will send a code to reset the password.",
    ),
    ("reset_heading", "Choose a new password"),
    (
        "reset_intro",
        "If {{email}} has an account, a code is on its way. Enter it with your new password.",
    ),
    ("reset_button", "Set password and sign in"),
    ("second_factor_heading", "Second step"),
    (
        "second_factor_intro",
        "Enter the code from your authenticator app, or one of your recovery codes.",
    ),
    ("second_factor_label", "Code"),
    (
        "second_factor_passkey_intro",
        "Confirm it is you with one of your passkeys.",
    ),
    ("recovery_label", "Recovery code"),
    ("continue_button", "Continue"),
    ("passkey_button", "Sign in with a passkey"),
    ("passkey_second_factor_button", "Use a passkey instead"),
    (
        "passkey_error",
        "The passkey was not used. Try again, or sign in another way.",
    ),
    ("signed_out_heading", "You are signed out"),
    ("signed_out_text", "You have been signed out."),
    ("sign_out_heading", "Sign out"),
    ("sign_out_button", "Sign out"),
    ("forbidden_heading", "No access"),
    (
        "forbidden_text",
        "You are signed in as {{email}}, but this account may not open this page. Ask the administrator for access, or sign in with another account.",
    ),
    ("switch_account_button", "Sign in with another account"),
    (
        "error_form_expired",
        "This form has expired. Please try again.",
    ),
    ("error_heading", "There is a problem"),
];

/// The loaded templates: the layout, the extra stylesheet and the texts.
#[derive(Debug, Clone)]
pub struct Templates {
    layout: String,
    /// Appended to the built-in stylesheet (so colours can be changed
    /// through its custom properties).
    pub extra_style: String,
    texts: BTreeMap<&'static str, String>,
}

/// Why a template file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("pages.templates_dir: {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pages.templates_dir: {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Templates {
    pub fn built_in() -> Templates {
        Templates {
            layout: LAYOUT.to_string(),
            extra_style: String::new(),
            texts: TEXTS.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        }
    }

    /// The built-in templates with whatever `dir` replaces: `layout.html`,
    /// `style.css` (appended), `texts.toml` (some or all texts).
    pub fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut t = Templates::built_in();
        let Some(dir) = dir else { return Ok(t) };
        let read = |name: &str| -> Result<Option<String>, TemplateError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(TemplateError::Read {
                    path: path.display().to_string(),
                    source,
                }),
            }
        };
        let invalid = |name: &str, message: String| TemplateError::Invalid {
            path: dir.join(name).display().to_string(),
            message,
        };
        if let Some(layout) = read("layout.html")? {
            if !layout.contains("{{content}}") {
                return Err(invalid("layout.html", "must contain {{content}}".into()));
            }
            if layout.to_ascii_lowercase().contains("<script") {
                return Err(invalid(
                    "layout.html",
                    "must not contain scripts (the pages' CSP refuses them)".into(),
                ));
            }
            t.layout = layout;
        }
        if let Some(style) = read("style.css")? {
            t.extra_style = style;
        }
        if let Some(texts) = read("texts.toml")? {
            let table: BTreeMap<String, String> =
                toml::from_str(&texts).map_err(|e| invalid("texts.toml", e.to_string()))?;
            for (key, value) in table {
                let Some((known, _)) = TEXTS.iter().find(|(k, _)| *k == key) else {
                    return Err(invalid("texts.toml", format!("unknown text \"{key}\"")));
                };
                t.texts.insert(known, value);
            }
        }
        Ok(t)
    }

    /// The text `key` with `{{name}}` values filled in (escaped).
    pub fn text(&self, key: &str, values: &[(&str, &str)]) -> String {
        let raw = self.texts.get(key).map_or(key, String::as_str);
        fill(raw, values, &[])
    }

    /// A whole page around `content` and `logo` (markup built by the
    /// caller).
    pub fn page(&self, values: &[(&str, &str)], content: &str, logo: &str) -> String {
        fill(
            &self.layout,
            values,
            &[("content", content), ("logo", logo)],
        )
    }
}

/// Substitutes `{{name}}`: `values` escaped, `raw` as is; unknown names
/// become empty.
fn fill(template: &str, values: &[(&str, &str)], raw: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        if let Some((_, v)) = raw.iter().find(|(k, _)| *k == name) {
            out.push_str(v);
        } else if let Some((_, v)) = values.iter().find(|(k, _)| *k == name) {
            escape(v, &mut out);
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_both_quotes() {
        assert_eq!(
            esc(r#"<a href="x" onclick='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(esc("plain é ✓"), "plain é ✓");
    }

    #[test]
    fn values_are_escaped_and_content_is_not() {
        let t = Templates::built_in();
        let page = t.page(&[("heading", "<b>"), ("title", "T&T")], "<form></form>", "");
        assert!(page.contains("<h1 id=\"page-heading\">&lt;b&gt;</h1>"));
        assert!(page.contains("T&amp;T"));
        assert!(page.contains("<form></form>"));
        assert!(
            t.text("verify_intro", &[("email", "<x@y.co>")])
                .contains("&lt;x@y.co&gt;")
        );
    }

    #[test]
    fn overrides_load_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("texts.toml"),
            "sign_in_heading = \"Welcome\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("style.css"), ":root { --accent: #0a0; }").unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        assert_eq!(t.text("sign_in_heading", &[]), "Welcome");
        assert!(t.extra_style.contains("--accent"));
        std::fs::write(dir.path().join("texts.toml"), "nonsense = \"x\"\n").unwrap();
        assert!(Templates::load(Some(dir.path())).is_err());
        std::fs::remove_file(dir.path().join("texts.toml")).unwrap();
        std::fs::write(dir.path().join("layout.html"), "<html>no content</html>").unwrap();
        assert!(Templates::load(Some(dir.path())).is_err());
    }
}
