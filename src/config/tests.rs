use super::*;

fn err(text: &str) -> String {
    Config::parse(text, "test.toml").unwrap_err().to_string()
}

#[test]
fn empty_file_gives_documented_defaults() {
    let c = Config::parse("", "t").unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8443");
    assert_eq!(c.session.idle_timeout, Duration::from_secs(86_400));
    assert_eq!(c.session.absolute_timeout, Duration::from_secs(7 * 86_400));
    assert_eq!(c.otp.ttl, Duration::from_secs(300));
    assert_eq!(c.otp.max_sends_per_day, 5);
    assert_eq!(c.password.min_length, 8);
    assert_eq!(c.routes.len(), 2);
    assert!(c.tls.is_none());
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
    assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("2days"), Ok(Duration::from_secs(172_800)));
    assert!(parse_duration("5").is_err());
    assert!(parse_duration("m").is_err());
    assert!(parse_duration("5 fortnights").is_err());
}

#[test]
fn duration_keys_take_humantime_forms_and_refusals_name_path_and_line() {
    let c = Config::parse(
        "[session]\nidle_timeout = \"1h 30m\"\nabsolute_timeout = \"2days\"\n\
         [upstreams.api]\nurl = \"http://127.0.0.1:1\"\ntimeout = \"1min 5s\"\n\
         [tls]\nself_signed = true\nhsts_max_age = \"0\"\n",
        "t",
    )
    .unwrap();
    assert_eq!(c.session.idle_timeout, Duration::from_secs(5400));
    assert_eq!(c.session.absolute_timeout, Duration::from_secs(2 * 86_400));
    assert_eq!(c.upstreams["api"].timeout, Duration::from_secs(65));
    assert_eq!(c.tls.unwrap().hsts_max_age, Duration::ZERO);
    for (text, want) in [
        (
            "[session]\nidle_timeout = \"soon\"\n",
            "test.toml, line 2: key `session.idle_timeout`: \"soon\" is not a duration",
        ),
        (
            "[upstream]\n\n[upstreams.api]\nurl = \"http://x\"\nconnect_timeout = \"0s\"\n",
            "test.toml, line 5: key `upstreams.api.connect_timeout`: \"0s\" is zero",
        ),
        (
            "[limits]\nfirst_backoff = \"10\"\n",
            "test.toml, line 2: key `limits.first_backoff`: \"10\" is not a duration like \"30s\", \"5m\", \"1h 30m\" or \"7d\" (time unit needed",
        ),
        (
            "[tls]\nself_signed = true\nhsts_max_age = \"never\"\n",
            "test.toml, line 3: key `tls.hsts_max_age`: \"never\" is not a duration",
        ),
    ] {
        let e = err(text);
        assert!(e.contains(want), "{want:?} not in {e:?}");
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let e = err("[server]\nlisten = \"127.0.0.1:1\"\nlistn = \"x\"\n");
    assert!(e.contains("listn"), "{e}");
    assert!(e.contains("line 3"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    assert!(err("[session]\nidle_timeout = \"soon\"").contains("session.idle_timeout"));
    assert!(err("[server]\nlisten = \"nowhere\"").contains("server.listen"));
    assert!(err("[mail]\ntransport = \"pigeon\"").contains("mail.transport"));
    assert!(err("[mail]\ntransport = \"smtp\"").contains("mail.smtp"));
    assert!(err("[upstream]\nurl = \"ftp://x\"").contains("upstream.url"));
    assert!(err("[tls]\ncert = \"a.pem\"").contains("tls.key"));
    assert!(err("[[route]]\nprefix = \"/a\"\nauth = \"maybe\"").contains("route[0].auth"));
    assert!(err("[[route]]\nprefix = \"/a/../b\"\nauth = \"none\"").contains("route[0].prefix"));
    assert!(err("[otp]\nmax_attempts = 0").contains("otp.max_attempts"));
    let e = err("[otp]\nmax_attempts = \"five\"");
    assert!(
        e.contains("line 2") && e.contains("otp.max_attempts"),
        "{e}"
    );
}

#[test]
fn a_mistake_in_a_later_route_names_that_route_and_its_line() {
    let routes = "[[route]]\nprefix = \"/a/\"\nauth = \"required\"\nmethods = [\"GET\"]\n\
                  [[route]]\nprefix = \"/b/\"\nauth = \"required\"\n";
    // The valid form is accepted…
    assert!(Config::parse(routes, "t").is_ok());
    for (later, want) in [
        (
            "methods = [\"GE T\"]\n",
            "test.toml, line 8: key `route[1].methods`: \"GE T\" is not an HTTP method",
        ),
        (
            "upstream = \"nope\"\n",
            "test.toml, line 8: key `route[1].upstream`: \"nope\"",
        ),
        (
            "on_unauthenticated = \"redirect\"\n",
            "test.toml, line 8: key `route[1].on_unauthenticated`",
        ),
    ] {
        let e = err(&format!("{routes}{later}"));
        assert!(e.contains(want), "{want:?} not in {e:?}");
    }
    // A prefix listed twice is the later route's mistake.
    let e = err(&format!(
        "{routes}[[route]]\nprefix = \"/A/\"\nauth = \"none\"\n"
    ));
    assert!(
        e.contains("test.toml, line 9: key `route[2].prefix`: \"/a/\" is listed twice"),
        "{e}"
    );
}

#[test]
fn operations_keys_have_defaults_and_are_checked() {
    let c = Config::parse("[store]\npath = \"/var/lib/g/s.redb\"", "t").unwrap();
    assert_eq!(c.admin.listen, Some("127.0.0.1:8449".parse().unwrap()));
    assert_eq!(c.admin.socket, PathBuf::from("/var/lib/g/admin.sock"));
    assert_eq!(c.server.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.log.format, LogFormat::Text);
    assert!(c.server.trusted_proxies.is_empty());
    let c = Config::parse(
        "[admin]\nlisten = \"off\"\n[log]\nformat = \"json\"\n\
         [server]\ntrusted_proxies = [\"127.0.0.1/32\", \"::1\"]",
        "t",
    )
    .unwrap();
    assert_eq!(c.admin.listen, None);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.server.trusted_proxies.len(), 2);
    assert!(err("[admin]\nlisten = \"9090\"").contains("admin.listen"));
    assert!(err("[log]\nformat = \"xml\"").contains("log.format"));
    assert!(
        err("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]").contains("server.trusted_proxies")
    );
    assert!(err("[server]\ndrain_timeout = \"soon\"").contains("server.drain_timeout"));
}

#[test]
fn smtp_password_is_not_in_debug_output() {
    let c = Config::parse(
        "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"h\"\nusername = \"u\"\npassword = \"hunter2\"",
        "t",
    )
    .unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn mail_keys_are_checked() {
    let c = Config::parse("", "t").unwrap();
    assert_eq!(c.mail.deadline, c.otp.ttl);
    assert!(!c.mail.code_in_subject);
    let c = Config::parse("[otp]\nttl = \"10m\"", "t").unwrap();
    assert_eq!(c.mail.deadline, Duration::from_secs(600));
    assert!(err("[mail]\ntransport = \"file\"").contains("mail.dir"));
    assert!(err("[mail]\ndeadline = \"1h\"").contains("mail.deadline"));
    assert!(err("[mail]\nretry_initial = \"5s\"\nretry_max = \"1s\"").contains("mail.retry_max"));
    let smtp = "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"h\"\nusername = \"u\"\n";
    let e = err(&format!("{smtp}password = \"a\"\npassword_env = \"B\""));
    assert!(e.contains("mail.smtp.password"), "{e}");
    assert!(err(smtp).contains("mail.smtp.password"));
    let c = Config::parse(&format!("{smtp}password_file = \"smtp-pass\""), "t").unwrap();
    let MailTransport::Smtp(s) = c.mail.transport else {
        panic!()
    };
    assert_eq!(s.password, Some(PasswordSource::File("smtp-pass".into())));
    let e = err(
        "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"h\"\nsecurity = \"none\"\nca_file = \"ca.pem\"",
    );
    assert!(e.contains("mail.smtp.ca_file"), "{e}");
}

#[test]
fn named_upstreams_and_routes_that_use_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let text = format!(
        "[upstreams.web]\nurl = \"http://127.0.0.1:5173\"\n\
         [upstreams.api]\nurl = \"https://10.0.0.5:8443\"\nca_file = \"{}\"\n\
         server_name = \"api.internal\"\ntimeout = \"7s\"\npreserve_host = true\n\
         [[route]]\nprefix = \"/api/\"\nauth = \"required\"\nupstream = \"api\"\n\
         [[route]]\nprefix = \"/\"\nauth = \"optional\"\nupstream = \"web\"\n",
        ca.display()
    );
    let c = Config::parse(&text, "t").unwrap();
    let api = &c.upstreams["api"];
    assert_eq!(api.timeout, Duration::from_secs(7));
    assert!(api.preserve_host);
    let tls = api.tls.as_ref().unwrap();
    assert_eq!(tls.server_name.to_str(), "api.internal");
    assert_eq!(tls.ca_certs.as_ref().unwrap().len(), 1);
    assert!(c.upstreams["web"].tls.is_none());
    assert_eq!(c.routes[0].upstream.as_deref(), Some("api"));
    // Without server_name the URL's host is verified, IP addresses included.
    let c = Config::parse("[upstream]\nurl = \"https://[::1]:8443\"", "t").unwrap();
    assert_eq!(c.upstream.tls.unwrap().server_name.to_str(), "::1");
}

#[test]
fn upstream_mistakes_name_their_key() {
    let e = err("[[route]]\nprefix = \"/\"\nauth = \"none\"\nupstream = \"api\"");
    assert!(
        e.contains("route[0].upstream") && e.contains("\"api\""),
        "{e}"
    );
    let e = err("[upstreams.api]\nurl = \"htp://x\"");
    assert!(e.contains("upstreams.api.url"), "{e}");
    let e = err("[upstreams.api]\ntimeout = \"1s\"");
    assert!(e.contains("upstreams.api.url"), "{e}");
    let e = err("[upstreams.api]\nurl = \"https://x\"\nca_file = \"/nonexistent/ca.pem\"");
    assert!(
        e.contains("upstreams.api.ca_file") && e.contains("/nonexistent/ca.pem"),
        "{e}"
    );
    let e = err("[upstreams.api]\nurl = \"http://x\"\nca_file = \"ca.pem\"");
    assert!(e.contains("upstreams.api.ca_file"), "{e}");
    let e = err("[upstreams.api]\nurl = \"https://x\"\nserver_name = \"not a name\"");
    assert!(e.contains("upstreams.api.server_name"), "{e}");
    let e = err("[upstreams.\"a b\"]\nurl = \"http://x\"");
    assert!(e.contains("upstreams.a b"), "{e}");
    let e = err("[upstreams.api]\nurl = \"http://x\"\ntimeout = \"soon\"");
    assert!(e.contains("upstreams.api.timeout"), "{e}");
}

#[test]
fn notify_and_account_mail_templates_parse() {
    assert!(Config::parse("", "t").unwrap().notify.new_device);
    let c = Config::parse(
        "[notify]\nnew_device = false\n\
         [mail.templates.new_sign_in]\ntext = \"/etc/gatehouse/new.txt\"\n",
        "t",
    )
    .unwrap();
    assert!(!c.notify.new_device);
    assert_eq!(
        c.mail.templates.new_sign_in.text.as_deref(),
        Some(std::path::Path::new("/etc/gatehouse/new.txt"))
    );
    assert!(c.mail.templates.reset_code.text.is_none());
    assert!(err("[notify]\nnew_devices = false\n").contains("new_devices"));
    assert!(err("[mail.templates.reset_code]\nbody = \"x\"\n").contains("body"));
}

#[test]
fn postgres_store_keys_parse_and_errors_name_the_key() {
    assert!(matches!(
        Config::parse("", "t").unwrap().store.backend,
        StoreBackend::Redb
    ));
    let c = Config::parse(
        "[store]\nkind = \"postgres\"\nurl = \"postgres://gh:s3cret@127.0.0.1:5432/gh\"\npool_size = 4\n",
        "t",
    )
    .unwrap();
    let StoreBackend::Postgres(pg) = &c.store.backend else {
        panic!()
    };
    assert_eq!(pg.pool_size, 4);
    assert_eq!(pg.url.expose(), "postgres://gh:s3cret@127.0.0.1:5432/gh");
    // The password never shows in Debug output.
    assert!(!format!("{c:?}").contains("s3cret"));
    // Defaults, and the URL from the environment.
    let var = "GATEHOUSE_CONFIG_TEST_PG_URL_UNSET";
    let e = err(&format!(
        "[store]\nkind = \"postgres\"\nurl_env = \"{var}\"\n"
    ));
    assert!(e.contains("store.url_env") && e.contains(var), "{e}");
    assert!(err("[store]\nkind = \"postgres\"\n").contains("store.url"));
    assert!(
        err("[store]\nkind = \"postgres\"\nurl = \"postgres://a@b/c\"\nurl_env = \"X\"\n")
            .contains("store.url")
    );
    let e = err("[store]\nkind = \"postgres\"\nurl = \"postgres://u:pw99@h:notaport/db\"\n");
    assert!(e.contains("store.url") && !e.contains("pw99"), "{e}");
    assert!(
        err("[store]\nkind = \"postgres\"\nurl = \"postgres://a@b/c\"\npool_size = 0\n")
            .contains("store.pool_size")
    );
    assert!(err("[store]\nurl = \"postgres://a@b/c\"\n").contains("store.url"));
    assert!(err("[store]\nkind = \"mysql\"\n").contains("store.kind"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("url");
    std::fs::write(&file, "postgres://gh@127.0.0.1/gh\n").unwrap();
    let c = Config::parse(
        &format!(
            "[store]\nkind = \"postgres\"\nurl_file = \"{}\"\n",
            file.display()
        ),
        "t",
    )
    .unwrap();
    let StoreBackend::Postgres(pg) = &c.store.backend else {
        panic!()
    };
    assert_eq!(pg.url.expose(), "postgres://gh@127.0.0.1/gh");
    assert_eq!(pg.pool_size, 16);
}

#[test]
fn postgres_outbox_lease_is_configurable_and_bounded() {
    let pg = |extra: &str| {
        Config::parse(
            &format!("[store]\nkind = \"postgres\"\nurl = \"postgres://a@b/c\"\n{extra}"),
            "t",
        )
    };
    let lease = |c: Config| match c.store.backend {
        StoreBackend::Postgres(pg) => pg.lease,
        StoreBackend::Redb => panic!("postgres expected"),
    };
    assert_eq!(lease(pg("").unwrap()), Duration::from_secs(60));
    assert_eq!(
        lease(pg("lease = \"5m\"\n").unwrap()),
        Duration::from_secs(300)
    );
    for bad in ["0s", "4s", "2h", "soon"] {
        let e = pg(&format!("lease = \"{bad}\"\n")).unwrap_err().to_string();
        assert!(e.contains("store.lease"), "{bad}: {e}");
    }
    // An SMTP attempt (three mail.smtp.timeout) must end within the lease.
    let e = pg("lease = \"60s\"\n[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"h\"\ntimeout = \"20s\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("store.lease") && e.contains("mail.smtp.timeout"),
        "{e}"
    );
    assert!(pg("lease = \"61s\"\n[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"h\"\ntimeout = \"20s\"\n").is_ok());
    // Only with PostgreSQL.
    assert!(err("[store]\nlease = \"60s\"\n").contains("store.lease"));
}
