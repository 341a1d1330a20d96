//! Checks for the `[mail]` section: transport, sender, templates, SMTP
//! security and where the SMTP password comes from.

use std::time::Duration;

use super::raw::*;
use super::values::duration_or;
use super::*;

pub(super) fn check_mail(raw: RawMail, otp_ttl: Duration) -> Result<MailConfig, ConfigError> {
    let from = raw
        .from
        .unwrap_or_else(|| "Flowtask <no-reply@example.com>".to_string());
    if !from.contains('@') || from.contains(['\r', '\n']) {
        return Err(invalid(
            "mail.from",
            "must be an address, as in \"Flowtask <no-reply@example.com>\"",
        ));
    }
    let transport = match raw.transport.as_deref().unwrap_or("log") {
        "log" => MailTransport::Log,
        "file" => {
            let dir = raw
                .dir
                .filter(|d| !d.as_os_str().is_empty())
                .ok_or_else(|| invalid("mail.dir", "is required when mail.transport = \"file\""))?;
            MailTransport::File(dir)
        }
        "smtp" => {
            let smtp = raw.smtp.ok_or_else(|| {
                invalid("mail.smtp", "is required when mail.transport = \"smtp\"")
            })?;
            MailTransport::Smtp(check_smtp(smtp)?)
        }
        other => {
            return Err(invalid(
                "mail.transport",
                format!("\"{other}\" is not one of \"smtp\", \"log\", \"file\""),
            ));
        }
    };
    let deadline = duration_or(raw.deadline, otp_ttl);
    if deadline > otp_ttl {
        return Err(invalid(
            "mail.deadline",
            "must not be longer than otp.ttl (a code that expired is not worth sending)",
        ));
    }
    let retry_initial = duration_or(raw.retry_initial, Duration::from_secs(1));
    let retry_max = duration_or(raw.retry_max, Duration::from_secs(10));
    if retry_max < retry_initial {
        return Err(invalid(
            "mail.retry_max",
            "must be at least mail.retry_initial",
        ));
    }
    let templates = raw.templates.unwrap_or_default();
    let product_name = raw.product_name.unwrap_or_else(|| "Flowtask".to_string());
    if product_name.contains(['\r', '\n']) {
        return Err(invalid("mail.product_name", "must be a single line"));
    }
    Ok(MailConfig {
        transport,
        from,
        product_name,
        code_in_subject: raw.code_in_subject.unwrap_or(false),
        deadline,
        retry_initial,
        retry_max,
        templates: TemplatePaths {
            subject: templates.subject,
            text: templates.text,
            html: templates.html,
            reset_code: set_paths(templates.reset_code),
            email_change_code: set_paths(templates.email_change_code),
            password_changed: set_paths(templates.password_changed),
            email_changing: set_paths(templates.email_changing),
            email_in_use: set_paths(templates.email_in_use),
            new_sign_in: set_paths(templates.new_sign_in),
        },
    })
}

fn set_paths(raw: Option<RawTemplateSet>) -> TemplateSetPaths {
    let raw = raw.unwrap_or_default();
    TemplateSetPaths {
        subject: raw.subject,
        text: raw.text,
        html: raw.html,
    }
}

fn check_smtp(raw: RawSmtp) -> Result<SmtpConfig, ConfigError> {
    let host = raw
        .host
        .filter(|h| !h.trim().is_empty())
        .ok_or_else(|| invalid("mail.smtp.host", "is required"))?;
    let security = match raw.security.as_deref().unwrap_or("starttls") {
        "none" => SmtpSecurity::None,
        "starttls" => SmtpSecurity::StartTls,
        "tls" => SmtpSecurity::Tls,
        other => {
            return Err(invalid(
                "mail.smtp.security",
                format!("\"{other}\" is not one of \"none\", \"starttls\", \"tls\""),
            ));
        }
    };
    let default_port = match security {
        SmtpSecurity::None => 25,
        SmtpSecurity::StartTls => 587,
        SmtpSecurity::Tls => 465,
    };
    let password = match (raw.password, raw.password_env, raw.password_file) {
        (None, None, None) => None,
        (Some(p), None, None) => Some(PasswordSource::Inline(p)),
        (None, Some(var), None) if !var.is_empty() => Some(PasswordSource::Env(var)),
        (None, None, Some(path)) if !path.as_os_str().is_empty() => {
            Some(PasswordSource::File(path))
        }
        (None, Some(_), None) => {
            return Err(invalid("mail.smtp.password_env", "must name a variable"));
        }
        (None, None, Some(_)) => {
            return Err(invalid("mail.smtp.password_file", "must name a file"));
        }
        _ => {
            return Err(invalid(
                "mail.smtp.password",
                "set only one of password, password_env and password_file",
            ));
        }
    };
    if password.is_some() && raw.username.is_none() {
        return Err(invalid(
            "mail.smtp.username",
            "is required when an SMTP password is set",
        ));
    }
    if raw.username.is_some() && password.is_none() {
        return Err(invalid(
            "mail.smtp.password",
            "is required when mail.smtp.username is set (or use password_env / password_file)",
        ));
    }
    if security == SmtpSecurity::None && raw.ca_file.is_some() {
        return Err(invalid(
            "mail.smtp.ca_file",
            "has no effect with security = \"none\"; remove it or use \"starttls\" / \"tls\"",
        ));
    }
    Ok(SmtpConfig {
        host,
        port: raw.port.unwrap_or(default_port),
        security,
        username: raw.username,
        password,
        ca_file: raw.ca_file,
        timeout: duration_or(raw.timeout, Duration::from_secs(30)),
    })
}
