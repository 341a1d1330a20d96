//! Property tests for the path canonicaliser: however a protected path is
//! re-spelled the way some server would still read it, it is either still
//! routed to the protected route or refused — never routed elsewhere.

use gatehouse::parsers::{auth_for, canonical};
use gatehouse::{Route, RouteAuth};
use proptest::prelude::*;

fn routes() -> Vec<Route> {
    vec![
        Route::new("/api/v2/", RouteAuth::Required),
        Route::new("/api/v2/public/", RouteAuth::None),
        Route::new("/", RouteAuth::Optional),
    ]
}

/// One way of re-spelling a single character of a path segment.
#[derive(Debug, Clone)]
enum Respell {
    Keep,
    Upper,
    PercentEncode,
}

fn segment() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,8}"
}

fn respell(text: &str, how: &[Respell]) -> String {
    text.chars()
        .zip(how.iter().cycle())
        .map(|(c, h)| match h {
            Respell::Keep => c.to_string(),
            Respell::Upper => c.to_ascii_uppercase().to_string(),
            Respell::PercentEncode => format!("%{:02X}", c as u32),
        })
        .collect()
}

fn respelling() -> impl Strategy<Value = Vec<Respell>> {
    prop::collection::vec(
        prop_oneof![
            Just(Respell::Keep),
            Just(Respell::Upper),
            Just(Respell::PercentEncode)
        ],
        1..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics(path in ".{0,200}") {
        let _ = canonical(&path);
    }

    #[test]
    fn accepted_paths_are_clean_and_stable(path in "/[a-zA-Z0-9/._;%~ -]{0,60}") {
        if let Ok(c) = canonical(&path) {
            prop_assert!(c.starts_with('/'));
            prop_assert!(!c.contains("//"));
            prop_assert!(!c.split('/').any(|s| s == "." || s == ".."));
            prop_assert_eq!(c.clone(), c.to_ascii_lowercase());
            if !c.contains('%') {
                prop_assert_eq!(canonical(&c).unwrap().into_owned(), c.clone().into_owned());
            }
        }
    }

    #[test]
    fn respelled_protected_paths_stay_protected_or_are_refused(
        rest in prop::collection::vec(segment(), 0..4),
        how in respelling(),
        extra_slashes in prop::collection::vec(0usize..3, 6),
        params in prop::collection::vec(prop::option::of("[a-z=]{0,4}"), 6),
        trailing in prop_oneof![Just(""), Just("/"), Just("."), Just(" ")],
    ) {
        let mut segments = vec!["api".to_string(), "v2".to_string()];
        segments.extend(rest);
        let mut path = String::new();
        for (i, seg) in segments.iter().enumerate() {
            path.push_str(&"/".repeat(1 + extra_slashes[i % extra_slashes.len()]));
            path.push_str(&respell(seg, &how));
            if let Some(p) = &params[i % params.len()] {
                path.push(';');
                path.push_str(p);
            }
        }
        path.push_str(trailing);
        if segments.get(2).map(String::as_str) == Some("public") {
            return Ok(()); // `/api/v2/public/` is a different route on purpose
        }
        if let Ok(c) = canonical(&path) {
            prop_assert_eq!(auth_for(&routes(), &c), Some(RouteAuth::Required), "{} → {}", path, c);
        }
    }

    /// The other side of the two properties above: a canonicaliser that
    /// refused everything would pass them, but not this one.
    #[test]
    fn clean_paths_are_accepted_unchanged(
        segments in prop::collection::vec(segment(), 0..5),
        trailing_slash in any::<bool>(),
    ) {
        let mut path = format!("/{}", segments.join("/"));
        if trailing_slash && !segments.is_empty() {
            path.push('/');
        }
        prop_assert_eq!(canonical(&path).map(|c| c.into_owned()), Ok(path.clone()));
    }

    /// Case and percent-encoding of ordinary characters are read leniently:
    /// such a spelling of a protected path is accepted (not merely refused)
    /// and lands on the protected route.
    #[test]
    fn case_and_escape_respellings_are_read_as_the_protected_path(
        rest in prop::collection::vec(segment(), 1..4),
        how in respelling(),
    ) {
        prop_assume!(rest[0] != "public");
        let plain = format!("/api/v2/{}", rest.join("/"));
        let path = format!("/{}/{}/{}", respell("api", &how), respell("v2", &how),
            rest.iter().map(|s| respell(s, &how)).collect::<Vec<_>>().join("/"));
        let c = canonical(&path);
        prop_assert!(c.is_ok(), "{} refused", path);
        let c = c.unwrap();
        prop_assert_eq!(c.as_ref(), plain.as_str());
        prop_assert_eq!(auth_for(&routes(), &c), Some(RouteAuth::Required));
    }

    #[test]
    fn dot_segments_and_encoded_separators_are_always_refused(
        before in "[a-z]{1,5}",
        after in "[a-z]{1,5}",
        trick in prop_oneof![
            Just(".."), Just("."), Just("%2e%2e"), Just("%2E."), Just(".%2e"), Just("..;x"),
            Just("%2f"), Just("%2F"), Just("%5c"), Just("\\\\"), Just("%252e"), Just("%00"),
        ],
    ) {
        let path = format!("/{before}/{trick}/{after}");
        prop_assert!(canonical(&path).is_err(), "{} accepted", path);
    }
}
