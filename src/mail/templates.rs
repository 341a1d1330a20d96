//! What Gatehouse says in a mail: subject, plain text and HTML for each kind
//! of message, from built-in defaults or template files named in `[mail]`,
//! rendered into a complete RFC 5322 multipart message.
//!
//! Templates use `{{code}}`, `{{product}}`, `{{lifetime}}` and `{{email}}`;
//! values substituted into HTML are escaped. `[mail.templates]` overrides the
//! sign-up code mail; the "account exists" notice keeps its built-in
//! wording; the account mails (reset, email change, security notices) have
//! their own tables, see `account`.

use std::path::Path;
use std::time::Duration;

use mail_send::mail_builder::MessageBuilder;

use super::MailError;
use crate::config::MailConfig;

mod account;
mod mfa;

const CODE_SUBJECT: &str = "Your {{product}} sign-up code";
const CODE_SUBJECT_WITH_CODE: &str = "{{code}} is your {{product}} sign-up code";
const CODE_TEXT: &str = "Your {{product}} verification code is:

    {{code}}

It is valid for {{lifetime}}.

If you did not try to sign up for {{product}} with {{email}}, someone else \
typed your address by mistake: you can ignore this message, and no account \
will be created.
";
const CODE_HTML: &str = "<!DOCTYPE html>
<html><body style=\"font-family: sans-serif; line-height: 1.5\">
<p>Your {{product}} verification code is:</p>
<p style=\"font-size: 28px; font-weight: bold; letter-spacing: 4px; font-family: monospace\">{{code}}</p>
<p>It is valid for {{lifetime}}.</p>
<p style=\"color: #666\">If you did not try to sign up for {{product}} with {{email}}, \
someone else typed your address by mistake: you can ignore this message, and no \
account will be created.</p>
</body></html>
";
const EXISTS_SUBJECT: &str = "Your {{product}} account";
const EXISTS_TEXT: &str = "Someone asked to sign up for {{product}} with {{email}}, \
but an account with this address already exists.

If that was you, sign in with your password instead. If it was not you, you \
can ignore this message; nothing has changed.
";
const EXISTS_HTML: &str = "<!DOCTYPE html>
<html><body style=\"font-family: sans-serif; line-height: 1.5\">
<p>Someone asked to sign up for {{product}} with {{email}}, but an account with \
this address already exists.</p>
<p>If that was you, sign in with your password instead. If it was not you, you \
can ignore this message; nothing has changed.</p>
</body></html>
";
const INVITE_SUBJECT: &str = "You are invited to {{product}}";
const INVITE_TEXT: &str = "You have been invited to create a {{product}} account \
with this address, {{email}}.

Open {{product}} and choose \"Create an account\" (or sign up in the app) \
with this address: a code will be mailed to confirm it. The invitation is \
valid until {{time}}.

If you did not expect this, you can ignore this message.
";
const INVITE_HTML: &str = "<!DOCTYPE html>
<html><body style=\"font-family: sans-serif; line-height: 1.5\">
<p>You have been invited to create a {{product}} account with this address, {{email}}.</p>
<p>Open {{product}} and choose &ldquo;Create an account&rdquo; (or sign up in the app) \
with this address: a code will be mailed to confirm it. The invitation is valid \
until {{time}}.</p>
<p style=\"color: #666\">If you did not expect this, you can ignore this message.</p>
</body></html>
";
const REFUSED_SUBJECT: &str = "Your {{product}} sign-up";
const REFUSED_TEXT: &str = "Someone asked to sign up for {{product}} with {{email}}, \
but sign-up is not open to this address.

If you expected to have access, ask the person who runs {{product}} for an \
invitation. If it was not you, you can ignore this message; nothing was created.
";
const REFUSED_HTML: &str = "<!DOCTYPE html>
<html><body style=\"font-family: sans-serif; line-height: 1.5\">
<p>Someone asked to sign up for {{product}} with {{email}}, but sign-up is not \
open to this address.</p>
<p>If you expected to have access, ask the person who runs {{product}} for an \
invitation. If it was not you, you can ignore this message; nothing was created.</p>
</body></html>
";
const TEST_SUBJECT: &str = "{{product}} mail check";
const TEST_TEXT: &str = "This is a test message from {{product}}'s \
`gatehouse check-mail`. If you can read it, mail delivery works.\n";

/// What a message is about, with the values its templates need.
#[derive(Clone)]
pub enum Content {
    /// The sign-up code and how long it is valid.
    SignupCode { code: String, ttl: Duration },
    /// Someone asked to sign up with an email that has an account already.
    AccountExists,
    /// `gatehouse check-mail`'s test message.
    Test,
    /// An operator's invitation to sign up (`gatehouse invite create`),
    /// valid until `expires_at` (Unix milliseconds).
    Invited { expires_at: u64 },
    /// Sign-up was asked for an address `[signup]` does not admit.
    SignupRefused,
    /// A password-reset code.
    ResetCode { code: String, ttl: Duration },
    /// An email-change code, to the new address.
    EmailChangeCode { code: String, ttl: Duration },
    /// "Your password was changed" (at `at`, Unix milliseconds).
    PasswordChanged { at: u64 },
    /// To the old address: the account is moving to `new_email`.
    EmailChanging { new_email: String },
    /// To the owner of an address someone tried to move their account to.
    EmailInUse,
    /// A sign-in from a browser without the known-device mark.
    NewSignIn {
        at: u64,
        ip: String,
        user_agent: Option<String>,
    },
    /// A second factor was added, removed or used (at `at`).
    SecondFactor {
        at: u64,
        event: crate::store::MfaEvent,
    },
}

/// A message ready for a transport.
#[derive(Clone)]
pub struct Rendered {
    /// Envelope and header recipient.
    pub to: String,
    /// Envelope sender (bare address).
    pub envelope_from: String,
    /// Without angle brackets.
    pub message_id: String,
    pub subject: String,
    /// The plain-text part (the `log` transport shows it).
    pub text: String,
    /// The whole RFC 5322 message.
    pub bytes: Vec<u8>,
}

/// The three templates of one kind of message.
#[derive(Debug, Clone)]
struct Set {
    subject: String,
    text: String,
    html: String,
}

/// Renders messages with the configured sender, product name and templates.
#[derive(Debug, Clone)]
pub struct Composer {
    from: String,
    product: String,
    code: Set,
    account: account::AccountSets,
}

impl Composer {
    /// Reads the template files named in the config and checks them.
    pub fn from_config(cfg: &MailConfig) -> Result<Composer, MailError> {
        let default_subject = if cfg.code_in_subject {
            CODE_SUBJECT_WITH_CODE
        } else {
            CODE_SUBJECT
        };
        let load = |key: &'static str, path: Option<&Path>, default: &str| match path {
            None => Ok(default.to_string()),
            Some(p) => std::fs::read_to_string(p).map_err(|source| MailError::TemplateRead {
                key,
                path: p.to_path_buf(),
                source,
            }),
        };
        let t = &cfg.templates;
        let subject = load(
            "mail.templates.subject",
            t.subject.as_deref(),
            default_subject,
        )?;
        let code = Set {
            subject: subject.trim().to_string(),
            text: load("mail.templates.text", t.text.as_deref(), CODE_TEXT)?,
            html: load("mail.templates.html", t.html.as_deref(), CODE_HTML)?,
        };
        check_template("mail.templates.subject", &code.subject)?;
        check_template("mail.templates.text", &code.text)?;
        check_template("mail.templates.html", &code.html)?;
        if code.subject.contains(['\r', '\n']) {
            return Err(MailError::Template {
                key: "mail.templates.subject",
                message: "must be a single line".into(),
            });
        }
        if code.subject.contains("{{code}}") && !cfg.code_in_subject {
            return Err(MailError::Template {
                key: "mail.templates.subject",
                message: "uses {{code}} but mail.code_in_subject = false".into(),
            });
        }
        for (key, body) in [
            ("mail.templates.text", &code.text),
            ("mail.templates.html", &code.html),
        ] {
            if !body.contains("{{code}}") {
                return Err(MailError::Template {
                    key,
                    message: "must contain {{code}}, or the mail carries no code".into(),
                });
            }
        }
        Ok(Composer {
            from: cfg.from.clone(),
            product: cfg.product_name.clone(),
            code,
            account: account::AccountSets::from_config(&cfg.templates)?,
        })
    }

    /// The full message for `to`; `token` becomes the left part of the
    /// `Message-ID` (stable across retries of one queued message).
    pub fn render(&self, to: &str, token: &str, content: &Content) -> Result<Rendered, MailError> {
        let (code, lifetime) = match content {
            Content::SignupCode { code, ttl }
            | Content::ResetCode { code, ttl }
            | Content::EmailChangeCode { code, ttl } => (code.as_str(), human_duration(*ttl)),
            _ => ("", String::new()),
        };
        let details = account::Details::of(content);
        let mfa_text: String;
        let values = Values {
            code,
            product: &self.product,
            lifetime: &lifetime,
            email: to,
            new_email: &details.new_email,
            time: &details.time,
            ip: &details.ip,
            user_agent: &details.user_agent,
        };
        let (subject, text, html) = match content {
            Content::SignupCode { .. } => (
                &self.code.subject as &str,
                &self.code.text as &str,
                Some(&self.code.html as &str),
            ),
            Content::AccountExists => (EXISTS_SUBJECT, EXISTS_TEXT, Some(EXISTS_HTML)),
            Content::Test => (TEST_SUBJECT, TEST_TEXT, None),
            Content::Invited { .. } => (INVITE_SUBJECT, INVITE_TEXT, Some(INVITE_HTML)),
            Content::SignupRefused => (REFUSED_SUBJECT, REFUSED_TEXT, Some(REFUSED_HTML)),
            Content::SecondFactor { event, .. } => {
                let (subject, text) = mfa::notice(*event);
                mfa_text = text;
                (subject, mfa_text.as_str(), None)
            }
            other => {
                let set = self.account.for_content(other);
                (
                    &set.subject as &str,
                    &set.text as &str,
                    Some(&set.html as &str),
                )
            }
        };
        let subject = fill(subject, &values, false);
        let text = fill(text, &values, false);
        let (name, address) = parse_mailbox(&self.from);
        let domain = address.rsplit('@').next().unwrap_or("localhost");
        let message_id = format!("{token}@{domain}");
        let mut builder = MessageBuilder::new()
            .from((name, address))
            .to(to)
            .subject(subject.clone())
            .message_id(message_id.clone())
            .text_body(text.clone());
        if let Some(html) = html {
            builder = builder.html_body(fill(html, &values, true));
        }
        Ok(Rendered {
            to: to.to_string(),
            envelope_from: address.to_string(),
            message_id,
            subject,
            text,
            bytes: builder.write_to_vec().map_err(MailError::Render)?,
        })
    }
}

struct Values<'a> {
    code: &'a str,
    product: &'a str,
    lifetime: &'a str,
    email: &'a str,
    new_email: &'a str,
    time: &'a str,
    ip: &'a str,
    user_agent: &'a str,
}

const PLACEHOLDERS: [&str; 4] = ["code", "product", "lifetime", "email"];

/// Refuses `{{name}}` placeholders that are not known (a typo would
/// otherwise reach every user verbatim).
fn check_template(key: &'static str, template: &str) -> Result<(), MailError> {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        if !PLACEHOLDERS.contains(&name) {
            return Err(MailError::Template {
                key,
                message: format!(
                    "unknown placeholder {{{{{name}}}}}; use {{{{code}}}}, {{{{product}}}}, \
                     {{{{lifetime}}}} or {{{{email}}}}"
                ),
            });
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

/// Substitutes the placeholders in one pass (values are never re-scanned).
fn fill(template: &str, v: &Values<'_>, html: bool) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let value = match after[..end].trim() {
            "code" => v.code,
            "product" => v.product,
            "lifetime" => v.lifetime,
            "email" => v.email,
            "new_email" => v.new_email,
            "time" => v.time,
            "ip" => v.ip,
            "user_agent" => v.user_agent,
            // check_template refused unknown names; keep the text if one slips by.
            _ => &rest[start..start + 2 + end + 2],
        };
        if html {
            escape_html(value, &mut out);
        } else {
            out.push_str(value);
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn escape_html(value: &str, out: &mut String) {
    for c in value.chars() {
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

/// Splits `Name <addr>` into its parts; a bare address has an empty name.
pub fn parse_mailbox(text: &str) -> (&str, &str) {
    match (text.find('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close => (
            text[..open].trim().trim_matches('"'),
            text[open + 1..close].trim(),
        ),
        _ => ("", text.trim()),
    }
}

fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs >= 3600 && secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn composer(extra: &str) -> Result<Composer, MailError> {
        let cfg = Config::parse(&format!("[mail]\n{extra}"), "t").unwrap();
        Composer::from_config(&cfg.mail)
    }

    fn code_mail(c: &Composer) -> Rendered {
        let content = Content::SignupCode {
            code: "123456".into(),
            ttl: Duration::from_secs(300),
        };
        c.render("a@x.io", "tok1", &content).unwrap()
    }

    #[test]
    fn code_mail_is_multipart_with_headers_and_no_code_in_subject() {
        let mail = code_mail(&composer("").unwrap());
        let text = String::from_utf8(mail.bytes).unwrap();
        assert!(
            text.contains("From: \"Flowtask\" <no-reply@example.com>"),
            "{text}"
        );
        assert!(text.contains("To: <a@x.io>"), "{text}");
        assert!(text.contains("Date: "), "{text}");
        assert!(text.contains("Message-ID: <tok1@example.com>"), "{text}");
        assert!(text.contains("multipart/alternative"), "{text}");
        assert!(text.contains("text/html"), "{text}");
        assert!(text.contains("5 minutes"));
        assert!(text.contains("ignore this message"));
        assert!(!mail.subject.contains("123456"));
        assert_eq!(mail.envelope_from, "no-reply@example.com");
        assert!(mail.text.contains("123456"));
    }

    #[test]
    fn code_in_subject_is_opt_in() {
        let mail = code_mail(&composer("code_in_subject = true").unwrap());
        assert_eq!(mail.subject, "123456 is your Flowtask sign-up code");
    }

    #[test]
    fn template_files_override_and_html_values_are_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            p.display().to_string()
        };
        let subject = write("s.txt", "Welcome to {{product}}\n");
        let text = write("t.txt", "Code {{code}} for {{email}}, {{lifetime}}.");
        let html = write("h.html", "<b>{{code}}</b> {{product}}");
        let c = composer(&format!(
            "product_name = \"Tom & <Jerry>\"\n[mail.templates]\nsubject = \"{subject}\"\n\
             text = \"{text}\"\nhtml = \"{html}\""
        ))
        .unwrap();
        let mail = code_mail(&c);
        assert_eq!(mail.subject, "Welcome to Tom & <Jerry>");
        assert_eq!(mail.text, "Code 123456 for a@x.io, 5 minutes.");
        let raw = String::from_utf8(mail.bytes).unwrap();
        assert!(
            raw.contains("<b>123456</b> Tom &amp; &lt;Jerry&gt;"),
            "{raw}"
        );
    }

    #[test]
    fn bad_templates_are_refused_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, "Hello {{nmae}} {{code}}").unwrap();
        let e = composer(&format!("[mail.templates]\ntext = \"{}\"", p.display()));
        let e = e.unwrap_err().to_string();
        assert!(
            e.contains("mail.templates.text") && e.contains("nmae"),
            "{e}"
        );
        std::fs::write(&p, "Hello {{email}}").unwrap();
        let e = composer(&format!("[mail.templates]\nhtml = \"{}\"", p.display()));
        assert!(e.unwrap_err().to_string().contains("{{code}}"));
        std::fs::write(&p, "{{code}} is yours").unwrap();
        let e = composer(&format!("[mail.templates]\nsubject = \"{}\"", p.display()));
        assert!(e.unwrap_err().to_string().contains("code_in_subject"));
        let e = composer("[mail.templates]\nsubject = \"/nonexistent/s.txt\"");
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("mail.templates.subject")
        );
    }

    #[test]
    fn mailbox_parsing() {
        assert_eq!(parse_mailbox("Flowtask <a@b.c>"), ("Flowtask", "a@b.c"));
        assert_eq!(parse_mailbox("a@b.c"), ("", "a@b.c"));
    }
}
