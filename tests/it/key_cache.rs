//! The key cache never outlives an admin change: a key revoked through the running server
//! is refused from the very next request, although the previous one was served from cache.

use crate::support::*;

#[test]
fn a_revoked_key_is_refused_on_the_next_request() {
    let s = Inlet::start();
    let key = s.mint("default");
    let mut c = s.client();
    for i in 0..3 {
        let r = c.post_json("/s2s/event", &key, &event(&format!("warm-{i}")));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let keys = parse_ndjson(&s.cli_ok(&["keys", "list", "--json"]));
    let id = keys[0]["id"].as_u64().unwrap().to_string();
    s.cli_ok(&["keys", "revoke", &id]);
    let r = c.post_json("/s2s/event", &key, &event("after-revoke"));
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "unknown_or_revoked_key");
    // A key minted after the cache was filled works at once.
    let fresh = s.mint("default");
    let r = s.client().post_json("/s2s/event", &fresh, &event("fresh"));
    assert_eq!(r.status, 200, "{}", r.text());
}
