//! Unit tests of `sources`.

use super::*;
use http::HeaderValue;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

fn supabase(pairs: &[(&str, &str)]) -> Result<Option<String>, AuthFailure> {
    TokenSource::parse("supabase-cookie:sb-ref-auth-token")
        .unwrap()
        .extract(&headers(pairs))
}

#[test]
fn bearer_header() {
    let source = TokenSource::parse("header:Authorization").unwrap();
    assert_eq!(
        source.extract(&headers(&[("authorization", "Bearer abc")])),
        Ok(Some("abc".into()))
    );
    assert_eq!(
        source.extract(&headers(&[("authorization", "bearer  abc ")])),
        Ok(Some("abc".into()))
    );
    assert_eq!(
        source.extract(&headers(&[("authorization", "Basic dXNlcg==")])),
        Ok(None)
    );
    assert_eq!(
        source.extract(&headers(&[("authorization", "Bearer")])),
        Ok(None)
    );
    assert_eq!(source.extract(&headers(&[])), Ok(None));
    let custom = TokenSource::parse("header:X-Token").unwrap();
    assert_eq!(
        custom.extract(&headers(&[("x-token", "raw")])),
        Ok(Some("raw".into()))
    );
}

#[test]
fn plain_cookie() {
    let source = TokenSource::parse("cookie:sb-access-token").unwrap();
    let map = headers(&[("cookie", "a=1; sb-access-token=tok; b=2")]);
    assert_eq!(source.extract(&map), Ok(Some("tok".into())));
    assert_eq!(source.extract(&headers(&[("cookie", "a=1")])), Ok(None));
}

fn b64(json: &str, pad: bool) -> String {
    let engine = if pad {
        base64::engine::general_purpose::URL_SAFE
    } else {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
    };
    format!("base64-{}", engine.encode(json))
}

#[test]
fn supabase_session_forms() {
    let json = r#"{"access_token":"eyJ.tok.sig","refresh_token":"r"}"#;
    let cookie = format!("sb-ref-auth-token={}", b64(json, false));
    assert_eq!(
        supabase(&[("cookie", &cookie)]),
        Ok(Some("eyJ.tok.sig".into()))
    );
    let padded = format!("sb-ref-auth-token={}", b64(json, true));
    assert_eq!(
        supabase(&[("cookie", &padded)]),
        Ok(Some("eyJ.tok.sig".into()))
    );
    let plain = "sb-ref-auth-token=%7B%22access_token%22%3A%22old.tok.sig%22%7D";
    assert_eq!(
        supabase(&[("cookie", plain)]),
        Ok(Some("old.tok.sig".into()))
    );
    let array = "sb-ref-auth-token=%5B%22arr.tok.sig%22%2C%22r%22%5D";
    assert_eq!(
        supabase(&[("cookie", array)]),
        Ok(Some("arr.tok.sig".into()))
    );
    assert_eq!(supabase(&[("cookie", "other=1")]), Ok(None));
    assert_eq!(
        supabase(&[("cookie", "sb-ref-auth-token=base64-!!!")]),
        Err(AuthFailure::Malformed)
    );
}

#[test]
fn supabase_chunks() {
    let encoded = b64(r#"{"access_token":"chunked.tok.sig"}"#, false);
    let (a, b) = encoded.split_at(encoded.len() / 2);
    let cookies = format!("sb-ref-auth-token.0={a}; sb-ref-auth-token.1={b}");
    assert_eq!(
        supabase(&[("cookie", &cookies)]),
        Ok(Some("chunked.tok.sig".into()))
    );
    // Chunks in separate Cookie headers (HTTP/2 splits them).
    let split = [
        ("cookie", format!("sb-ref-auth-token.1={b}")),
        ("cookie", format!("sb-ref-auth-token.0={a}")),
    ];
    let pairs: Vec<(&str, &str)> = split.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(supabase(&pairs), Ok(Some("chunked.tok.sig".into())));
    // A missing chunk invalidates the session.
    let gap = format!("sb-ref-auth-token.0={a}; sb-ref-auth-token.2={b}");
    assert_eq!(supabase(&[("cookie", &gap)]), Err(AuthFailure::Malformed));
    let orphan = format!("sb-ref-auth-token.1={b}");
    assert_eq!(
        supabase(&[("cookie", &orphan)]),
        Err(AuthFailure::Malformed)
    );
    // NAME itself wins over chunks (SPEC §2): stray, incomplete or
    // unreadable chunks beside it are left alone; chunks holding another
    // token are ambiguous (a backend reading them first would get a token
    // never verified).
    let same =
        format!("sb-ref-auth-token.0={a}; sb-ref-auth-token={encoded}; sb-ref-auth-token.1={b}");
    assert_eq!(
        supabase(&[("cookie", &same)]),
        Ok(Some("chunked.tok.sig".into()))
    );
    let whole = b64(r#"{"access_token":"whole.tok.sig"}"#, false);
    let both =
        format!("sb-ref-auth-token.0={a}; sb-ref-auth-token={whole}; sb-ref-auth-token.1={b}");
    assert_eq!(supabase(&[("cookie", &both)]), Err(AuthFailure::Ambiguous));
    for chunks in [
        format!("sb-ref-auth-token.1={b}"),
        format!("sb-ref-auth-token.{MAX_SUPABASE_CHUNKS}=x; sb-ref-auth-token.01=y"),
    ] {
        let both = format!("{chunks}; sb-ref-auth-token={whole}");
        assert_eq!(
            supabase(&[("cookie", &both)]),
            Ok(Some("whole.tok.sig".into())),
            "{both}"
        );
    }
    // Beside NAME, the chunks a chunk reader joins (`.0` up to the first
    // gap) must not hold another token, whatever lies past the gap; one of
    // them given twice with different values is ambiguous too.
    let other = b64(r#"{"access_token":"other.tok.sig"}"#, false);
    for (cookies, expected) in [
        (
            format!(
                "sb-ref-auth-token={whole}; sb-ref-auth-token.0={other}; sb-ref-auth-token.2=x"
            ),
            Err(AuthFailure::Ambiguous),
        ),
        (
            format!(
                "sb-ref-auth-token={whole}; sb-ref-auth-token.0={whole}; sb-ref-auth-token.2=x"
            ),
            Ok(Some("whole.tok.sig".into())),
        ),
        (
            format!(
                "sb-ref-auth-token={whole}; sb-ref-auth-token.0={whole}; sb-ref-auth-token.0={other}"
            ),
            Err(AuthFailure::Ambiguous),
        ),
        (
            format!("sb-ref-auth-token={whole}; sb-ref-auth-token.0=x; sb-ref-auth-token.0=y"),
            Err(AuthFailure::Ambiguous),
        ),
        // A run palisade cannot read may be one a lenient reader can
        // (a percent-escape, a space, an empty chunk ending its run).
        (
            "sb-ref-auth-token.0=garbage; sb-ref-auth-token=".to_string() + &whole,
            Err(AuthFailure::Ambiguous),
        ),
        (
            format!(
                "SB-REF-AUTH-TOKEN={whole}; sb-ref-auth-token.0=base64-%65{}",
                &other[8..]
            ),
            Err(AuthFailure::Ambiguous),
        ),
        (
            format!(
                "sb-ref-auth-token={whole}; sb-ref-auth-token.0={other}; sb-ref-auth-token.1=; sb-ref-auth-token.2=zz"
            ),
            Err(AuthFailure::Ambiguous),
        ),
        (
            format!(
                "sb-ref-auth-token={whole}; sb-ref-auth-token.0={whole}; sb-ref-auth-token.01=x"
            ),
            Err(AuthFailure::Ambiguous),
        ),
        // An empty NAME is no NAME (Supabase reads the chunks): the
        // chunks are read, strictly.
        (
            format!("sb-ref-auth-token=; sb-ref-auth-token.0={a}; sb-ref-auth-token.1={b}"),
            Ok(Some("chunked.tok.sig".into())),
        ),
        (
            format!(
                "sb-ref-auth-token=; sb-ref-auth-token.0=base64-%65{}",
                &other[8..]
            ),
            Err(AuthFailure::Malformed),
        ),
    ] {
        assert_eq!(supabase(&[("cookie", &cookies)]), expected, "{cookies}");
    }
    // Plain-JSON chunks are decoded one by one by the `cookie` package,
    // which keeps a chunk it cannot decode raw: each must decode alone.
    let chunks = |parts: &[&str]| -> String {
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| format!("sb-ref-auth-token.{i}={p}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let plain = ["%7B%22access_token%22%3A", "%22good%22%7D"];
    assert_eq!(
        supabase(&[("cookie", &chunks(&plain))]),
        Ok(Some("good".into()))
    );
    for parts in [
        // An escape split across chunks.
        &["%7B%22access_token%22%3A%2", "2good%22%7D"][..],
        // A bad escape, which that reader leaves raw.
        &["%7B%22access_token%22%3A%22good%22%7D", "%zz"][..],
        // Bytes that are not UTF-8 alone.
        &["%7B%22access_token%22%3A%22good%E3%80", "%80%22%7D"][..],
    ] {
        let line = chunks(parts);
        assert_eq!(
            supabase(&[("cookie", &line)]),
            Err(AuthFailure::Malformed),
            "{line}"
        );
        let beside = format!("sb-ref-auth-token={good}; {line}", good = plain.concat());
        assert!(supabase(&[("cookie", &beside)]).is_err(), "{beside}");
    }
    // An empty chunk ends a reader's run as a missing one does.
    let hole = format!("sb-ref-auth-token.0={a}; sb-ref-auth-token.1=; sb-ref-auth-token.2={b}");
    assert_eq!(supabase(&[("cookie", &hole)]), Err(AuthFailure::Malformed));
    // One chunk twice with different values.
    let twice = format!("sb-ref-auth-token.0={a}; sb-ref-auth-token.1={b}; sb-ref-auth-token.1=x");
    assert_eq!(supabase(&[("cookie", &twice)]), Err(AuthFailure::Ambiguous));
    // A non-canonical index is not silently skipped.
    let padded = format!("sb-ref-auth-token.0={a}; sb-ref-auth-token.01={b}");
    assert_eq!(
        supabase(&[("cookie", &padded)]),
        Err(AuthFailure::Malformed)
    );
}

#[test]
fn supabase_chunk_count_is_bounded() {
    let token = "t".repeat(120);
    let encoded = b64(&format!(r#"{{"access_token":"{token}"}}"#), false);
    // Up to the bound, chunks reassemble: here exactly MAX_SUPABASE_CHUNKS.
    let n = MAX_SUPABASE_CHUNKS;
    let len = encoded.len();
    let within: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "sb-ref-auth-token.{i}={}",
                &encoded[i * len / n..(i + 1) * len / n]
            )
        })
        .collect();
    assert_eq!(supabase(&[("cookie", &within.join("; "))]), Ok(Some(token)));
    // An index at the bound, or 600 chunks, is refused at once.
    let at_bound = format!("sb-ref-auth-token.0=a; sb-ref-auth-token.{MAX_SUPABASE_CHUNKS}=b");
    assert_eq!(
        supabase(&[("cookie", &at_bound)]),
        Err(AuthFailure::Malformed)
    );
    let many: Vec<String> = (0..600)
        .map(|i| format!("sb-ref-auth-token.{i}=x"))
        .collect();
    assert_eq!(
        supabase(&[("cookie", &many.join("; "))]),
        Err(AuthFailure::Malformed)
    );
    let huge = "sb-ref-auth-token.0=a; sb-ref-auth-token.99999999999999999999999=b";
    assert_eq!(supabase(&[("cookie", huge)]), Err(AuthFailure::Malformed));
}

#[test]
fn many_unrelated_cookies_are_read_in_one_pass() {
    let mut cookies: Vec<String> = (0..2000).map(|i| format!("c{i}=v{i}")).collect();
    cookies.push("sb-access-token=tok".into());
    let source = TokenSource::parse("cookie:sb-access-token").unwrap();
    assert_eq!(
        source.extract(&headers(&[("cookie", &cookies.join("; "))])),
        Ok(Some("tok".into()))
    );
}

fn all_sources() -> Vec<TokenSource> {
    [
        "header:Authorization",
        "cookie:sb-access-token",
        "supabase-cookie:sb-ref-auth-token",
    ]
    .iter()
    .map(|s| TokenSource::parse(s).unwrap())
    .collect()
}

#[test]
fn different_tokens_in_two_places_are_ambiguous() {
    let sources = all_sources();
    let find = |pairs: &[(&str, &str)]| {
        token_in(&sources, &headers(pairs)).map(|token| token.map(Cow::into_owned))
    };
    let session = format!(
        "sb-ref-auth-token={}",
        b64(r#"{"access_token":"t1"}"#, false)
    );
    let ambiguous: Vec<Vec<(&str, String)>> = vec![
        vec![
            ("authorization", "Bearer t1".into()),
            ("authorization", "Bearer t2".into()),
        ],
        vec![("cookie", "sb-access-token=t1; sb-access-token=t2".into())],
        vec![
            ("cookie", "sb-access-token=t1".into()),
            ("cookie", "sb-access-token=t2".into()),
        ],
        vec![
            ("authorization", "Bearer t1".into()),
            ("cookie", "sb-access-token=t2".into()),
        ],
        // Spellings lenient backends accept.
        vec![("cookie", "sb-access-token=t1; sb-access-token =t2".into())],
        vec![(
            "cookie",
            "sb-access-token=t1; \tsb-access-token\t=t2".into(),
        )],
        vec![("cookie", "sb-access-token=t1, sb-access-token=t2".into())],
        vec![(
            "cookie",
            "sb-access-token=t1; sb%2Daccess%2Dtoken=t2".into(),
        )],
        vec![(
            "cookie",
            "sb-access-token=t1; sb-access-token=\"t2\"".into(),
        )],
        vec![
            ("authorization", "Bearer t2".into()),
            ("cookie", session.clone()),
        ],
    ];
    for case in &ambiguous {
        let pairs: Vec<(&str, &str)> = case.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(find(&pairs), Err(AuthFailure::Ambiguous), "{case:?}");
    }
    let agreeing: Vec<Vec<(&str, String)>> = vec![
        vec![
            ("authorization", "Bearer t1".into()),
            ("authorization", "Bearer t1".into()),
        ],
        vec![(
            "cookie",
            "sb-access-token=t1; sb-access-token=\"t1\"".into(),
        )],
        vec![
            ("authorization", "Bearer t1".into()),
            ("cookie", session.clone()),
        ],
        vec![("cookie", " sb-access-token = t1 ".into())],
    ];
    for case in &agreeing {
        let pairs: Vec<(&str, &str)> = case.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(find(&pairs), Ok(Some("t1".into())), "{case:?}");
    }
    // Another credential in `Authorization` beside a found token: the
    // backend could read it instead.
    for other in ["Basic dXNlcg==", "Token t2", "t1", "Bearer t2"] {
        let pairs = [("authorization", other), ("cookie", "sb-access-token=t1")];
        assert_eq!(find(&pairs), Err(AuthFailure::Ambiguous), "{other}");
    }
}

#[test]
fn an_underscore_spelling_of_a_token_header_is_a_carrier() {
    let sources = [TokenSource::parse("header:X-Api-Token").unwrap()];
    let find = |pairs: &[(&str, &str)]| {
        token_in(&sources, &headers(pairs)).map(|token| token.map(Cow::into_owned))
    };
    assert_eq!(
        find(&[("x-api-token", "t1"), ("x_api_token", "t2")]),
        Err(AuthFailure::Ambiguous)
    );
    assert_eq!(find(&[("x_api-token", "t1")]), Ok(Some("t1".into())));
    assert_eq!(
        find(&[("x-api-token", "t1"), ("x_api_token", "t1")]),
        Ok(Some("t1".into()))
    );
}

#[test]
fn a_cookie_line_with_non_ascii_bytes_is_still_read() {
    let mut map = headers(&[("authorization", "Bearer t1")]);
    map.append(
        header::COOKIE,
        HeaderValue::from_bytes(b"x=\xff; sb-access-token=t2").unwrap(),
    );
    assert_eq!(token_in(&all_sources(), &map), Err(AuthFailure::Ambiguous));
}

#[test]
fn token_text_reads_only_a_bearer_scheme_followed_by_a_space() {
    let auth = &header::AUTHORIZATION;
    let other = &HeaderName::from_static("x-token");
    for (text, on_authorization, on_other) in [
        ("Bearer abc", Some("abc"), Some("abc")),
        ("BEARER abc ", Some("abc"), Some("abc")),
        ("  bearer   abc", Some("abc"), Some("abc")),
        ("Bearer a b", Some("a b"), Some("a b")),
        ("Bearer", None, Some("Bearer")),
        ("Bearer    ", None, Some("Bearer")),
        ("Bearerx abc", None, Some("Bearerx abc")),
        ("Bearer\tabc", None, Some("Bearer\tabc")),
        ("Basic dXNlcg==", None, Some("Basic dXNlcg==")),
        ("abc", None, Some("abc")),
        ("Beäre abc", None, Some("Beäre abc")),
        ("   ", None, None),
    ] {
        assert_eq!(
            token_text(auth, text),
            on_authorization,
            "{text:?} on Authorization"
        );
        assert_eq!(token_text(other, text), on_other, "{text:?} on X-Token");
    }
}

#[test]
fn lossy_borrows_utf8_and_replaces_anything_else() {
    assert!(matches!(lossy(b"abc.def"), Cow::Borrowed("abc.def")));
    assert_eq!(lossy(b"ab\xffc"), "ab\u{FFFD}c");
}

/// Where backends split or decode a `Cookie` line differently from
/// palisade, a token source's cookie is ambiguous rather than read one way
/// (session 20's red team: each case let a backend read a forged token).
#[test]
fn cookies_backends_read_apart_are_ambiguous() {
    let session = TokenSource::parse("cookie:session").unwrap();
    let read = |line: &str| session.extract(&headers(&[("cookie", line)]));
    assert_eq!(read("a=1; session=good; b=2"), Ok(Some("good".into())));
    // Unrelated cookies may hold what they like.
    assert_eq!(read("_ga=GA1.2,3 4; session=good"), Ok(Some("good".into())));
    for line in [
        // SimpleCookie starts another cookie at whitespace.
        "session=good; x=1 session=forged",
        "session=good; x=1\tsession=forged",
        // `cookie`/Starlette read `good,x=1` as the value; others split.
        "session=good,x=1",
        "x=1, session=good",
    ] {
        assert_eq!(read(line), Err(AuthFailure::Ambiguous), "{line}");
    }
    // Unicode whitespace around a name: Django and Werkzeug (UTF-8, then
    // `str.strip`) read `\u{3000}session` as `session`.
    for line in [
        "session=good; \u{3000}session=forged",
        "session=good; session\u{200a}=forged",
        "session=good; session\u{a0}=forged",
        "\u{2028}session=forged; session=good",
    ] {
        assert_eq!(read(line), Err(AuthFailure::Ambiguous), "{line:?}");
    }
    assert_eq!(read("\u{3000}session=good"), Ok(Some("good".into())));
    // A plain-JSON Supabase session whose raw text (read by readers that do
    // not percent-decode, or give up on a bad escape) holds another token.
    let good = "%7B%22access_token%22%3A%22good%22%7D";
    assert_eq!(
        supabase(&[("cookie", &format!("sb-ref-auth-token={good}"))]),
        Ok(Some("good".into()))
    );
    // Raw: one item, `good%22%2C%22x`; decoded: `good` first of two.
    let forged = r#"["good%22%2C%22x"]"#;
    assert_eq!(
        supabase(&[("cookie", &format!("sb-ref-auth-token={forged}"))]),
        Err(AuthFailure::Ambiguous)
    );
}
