//! Session tokens and cookies: creation, lookup with idle/absolute expiry,
//! and the in-memory cache that keeps proxied requests off the database.
//!
//! Tokens are 32 bytes from the OS CSPRNG, sent base64url in the cookie and
//! stored only as their SHA-256. Sliding expiry is tracked in memory and
//! written back at most once per `touch_interval`, so a proxied request costs
//! no database write.
//!
//! The cache is keyed by a keyed 128-bit SipHash of the token (a secret key
//! drawn at start-up), so a proxied request with a cached session costs one
//! short SipHash instead of a SHA-256; SHA-256 runs only on a miss, to find
//! the stored record. A second index maps each cached session's SHA-256 to
//! its key, so revocation (which knows only the SHA-256) drops the entry at
//! once: logout and `session revoke` still take effect on the next request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::clock::Clock;
use crate::config::SessionConfig;
use crate::store::run_blocking;
use crate::store::{
    Session, SessionExpiry, SessionOrigin, Store, StoreError, TokenHash, UnixMillis,
};
use crate::sync;

/// Length of a base64url-encoded 32-byte token.
const TOKEN_LEN: usize = 43;
/// Cached sessions kept at most; beyond that lookups read the store.
const CACHE_CAPACITY: usize = 100_000;
/// Lifetime of the known-device cookie.
const DEVICE_COOKIE_MAX_AGE_SECS: i64 = 365 * 86_400;

/// Who a valid session belongs to. Cheap to clone: the identity headers
/// forwarded upstream are built once per cached session, not per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: u64,
    pub email: Arc<str>,
    pub token: TokenHash,
    /// `X-Auth-User-Id` value.
    pub user_id_header: HeaderValue,
    /// `X-Auth-Email` value (UTF-8 bytes as is).
    pub email_header: HeaderValue,
    /// The operator-set groups (`gatehouse user groups`), read with the
    /// session on a cache miss, so access rules cost no query per request;
    /// a change drops the user's cached sessions (`forget_user`).
    pub groups: Arc<[String]>,
    /// `X-Auth-Groups` value (comma-separated); `None` when in no group.
    pub groups_header: Option<HeaderValue>,
}

impl Identity {
    /// Sets `X-Auth-User-Id` and `X-Auth-Email` (for the upstream, or for a
    /// forward-auth answer).
    pub fn insert_headers(&self, headers: &mut HeaderMap) {
        const USER_ID: http::HeaderName = http::HeaderName::from_static("x-auth-user-id");
        const EMAIL: http::HeaderName = http::HeaderName::from_static("x-auth-email");
        const GROUPS: http::HeaderName = http::HeaderName::from_static("x-auth-groups");
        headers.insert(USER_ID, self.user_id_header.clone());
        headers.insert(EMAIL, self.email_header.clone());
        match &self.groups_header {
            Some(groups) => headers.insert(GROUPS, groups.clone()),
            None => headers.remove(GROUPS),
        };
    }
}

impl Identity {
    /// Adds `X-Auth-User-Id`, `X-Auth-Email` and `X-Auth-Groups` to a
    /// request's headers from which every `X-Auth-*` header has already
    /// been stripped (see `proxy::strip_request_headers`): appended, as
    /// there is nothing to replace.
    pub fn append_to_stripped(&self, headers: &mut HeaderMap) {
        headers.append(USER_ID_HEADER, self.user_id_header.clone());
        headers.append(EMAIL_HEADER, self.email_header.clone());
        if let Some(groups) = &self.groups_header {
            headers.append(GROUPS_HEADER, groups.clone());
        }
    }
}

const USER_ID_HEADER: http::HeaderName = http::HeaderName::from_static("x-auth-user-id");
const EMAIL_HEADER: http::HeaderName = http::HeaderName::from_static("x-auth-email");
const GROUPS_HEADER: http::HeaderName = http::HeaderName::from_static("x-auth-groups");

/// A token handed to the client once; only its hash is kept.
pub struct NewToken {
    pub token: String,
    pub hash: TokenHash,
}

struct Cached {
    session: Session,
    /// Shared with every request it authenticates: a hit costs one
    /// reference count, not a copy of each header value.
    identity: Arc<Identity>,
    /// Last use seen by this process.
    last_seen: UnixMillis,
}

/// A cached session's key: the keyed SipHash-1-3 (128 bits) of its token.
/// Without the process's secret key nobody can aim a token at another
/// session's key: finding one is as hard as guessing a 128-bit secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CacheKey(u128);

impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Already a keyed pseudo-random value: its low half is the hash.
        state.write_u64(self.0 as u64);
    }
}

/// Hashes a [`CacheKey`] to itself (it is already uniformly spread and
/// unpredictable without the secret key), so a lookup hashes nothing again.
#[derive(Default, Clone, Copy)]
struct KeyIsHash(u64);

impl std::hash::Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `CacheKey`; fold anything else in.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyIsHashBuilder = std::hash::BuildHasherDefault<KeyIsHash>;

/// The in-memory sessions: by token key (the proxied path's lookup) and by
/// SHA-256 (what revocation and the store know). Both change together.
#[derive(Default)]
struct Cache {
    entries: HashMap<CacheKey, Cached, KeyIsHashBuilder>,
    keys: HashMap<TokenHash, CacheKey>,
}

impl Cache {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn insert(&mut self, key: CacheKey, cached: Cached) {
        self.remove_key(&key);
        self.remove_hash(&cached.identity.token);
        self.keys.insert(cached.identity.token, key);
        self.entries.insert(key, cached);
    }

    fn remove_key(&mut self, key: &CacheKey) {
        if let Some(old) = self.entries.remove(key) {
            self.keys.remove(&old.identity.token);
        }
    }

    fn remove_hash(&mut self, hash: &TokenHash) {
        if let Some(key) = self.keys.remove(hash) {
            self.entries.remove(&key);
        }
    }

    fn get_by_hash(&self, hash: &TokenHash) -> Option<&Cached> {
        self.entries.get(self.keys.get(hash)?)
    }

    fn key_of(&self, hash: &TokenHash) -> Option<CacheKey> {
        self.keys.get(hash).copied()
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.keys.clear();
    }

    /// Keeps the entries `keep` says yes to, in both maps.
    fn retain(&mut self, mut keep: impl FnMut(&Cached) -> bool) {
        let keys = &mut self.keys;
        self.entries.retain(|_, c| {
            let kept = keep(c);
            if !kept {
                keys.remove(&c.identity.token);
            }
            kept
        });
    }
}

/// Computes [`CacheKey`]s with a secret drawn from the OS at start-up.
struct TokenKeyer(SipHasher13);

impl TokenKeyer {
    fn new() -> TokenKeyer {
        let mut secret = [0u8; 16];
        crate::random::random_bytes(&mut secret);
        TokenKeyer(SipHasher13::new_with_key(&secret))
    }

    fn key(&self, token: &[u8]) -> CacheKey {
        let mut h = self.0;
        std::hash::Hasher::write(&mut h, token);
        CacheKey(h.finish128().as_u128())
    }
}

pub struct Sessions {
    store: Arc<dyn Store>,
    cookie_name: String,
    device_cookie_name: String,
    secure: bool,
    same_site: SameSite,
    domain: Option<String>,
    max_age_secs: i64,
    expiry: SessionExpiry,
    touch_interval_ms: u64,
    cache: Mutex<Cache>,
    keyer: TokenKeyer,
    /// Bumped whenever sessions are revoked. A lookup that read the store
    /// before a revocation must not put the session back in the cache, so it
    /// only caches if the epoch did not move meanwhile.
    epoch: AtomicU64,
    /// When a shared store stopped announcing revocations (0: it does, or
    /// the store is embedded). Cached sessions are trusted for
    /// `idle_timeout / 10` past it, then answered 503 until it is back.
    blind_since: AtomicU64,
    /// Session uses due to be written back (see [`Sessions::touch_in_background`]).
    touches: Arc<Mutex<Touches>>,
    /// WebSockets and streams opened with a session, ended with it.
    pub live: Arc<super::live::LiveConnections>,
    /// Idle and absolute expiry are measured on this (see `crate::clock`).
    clock: Clock,
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, cfg: &SessionConfig, tls: bool, clock: Clock) -> Sessions {
        // `__Host-` binds the cookie to this exact origin so sibling
        // subdomains cannot plant or overwrite it; browsers allow it only
        // with Secure, Path=/ and no Domain.
        let cookie_name = if tls && cfg.domain.is_none() {
            format!("__Host-{}", cfg.cookie_name)
        } else {
            cfg.cookie_name.clone()
        };
        let idle_ms = cfg.idle_timeout.as_millis() as u64;
        Sessions {
            store,
            device_cookie_name: format!("{cookie_name}_device"),
            cookie_name,
            secure: tls,
            same_site: cfg.same_site,
            domain: cfg.domain.clone(),
            max_age_secs: cfg.absolute_timeout.as_secs() as i64,
            expiry: SessionExpiry {
                idle_ms,
                absolute_ms: cfg.absolute_timeout.as_millis() as u64,
            },
            touch_interval_ms: (idle_ms / 10).clamp(1, 60_000),
            cache: Mutex::new(Cache::default()),
            keyer: TokenKeyer::new(),
            epoch: AtomicU64::new(0),
            blind_since: AtomicU64::new(0),
            touches: Arc::default(),
            live: Arc::default(),
            clock,
        }
    }

    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    pub fn expiry(&self) -> SessionExpiry {
        self.expiry
    }

    /// The known-device mark the request carries, if any.
    pub fn device_mark<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        find_cookie(headers, &self.device_cookie_name).filter(|v| v.len() <= 64)
    }

    /// A fresh random token.
    pub fn new_token() -> NewToken {
        let mut raw = [0u8; 32];
        crate::random::random_bytes(&mut raw);
        let token = crate::random::base64url(&raw);
        let hash = hash_token(&token);
        NewToken { token, hash }
    }

    /// Finds the session named by the request's cookie, if it is valid now.
    /// Expired sessions are removed. A cached session costs a keyed SipHash
    /// of the token; SHA-256 runs only when the cache does not have it.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Arc<Identity>>, StoreError> {
        self.authenticate_token(self.token_from(headers))
    }

    /// [`Sessions::authenticate`] with the cookie already found by
    /// [`Sessions::scan_cookies`].
    pub fn authenticate_scanned(
        &self,
        cookies: &CookieScan<'_>,
    ) -> Result<Option<Arc<Identity>>, StoreError> {
        self.authenticate_token(cookies.token.and_then(well_formed_token))
    }

    fn authenticate_token(
        &self,
        token: Option<&[u8]>,
    ) -> Result<Option<Arc<Identity>>, StoreError> {
        let Some(token) = token else {
            return Ok(None);
        };
        let key = self.keyer.key(token);
        let now = self.clock.now_millis();
        let cached = {
            let mut cache = sync::lock(&self.cache);
            self.cached(&mut cache, key, now)
        };
        match cached {
            Some(found) => self.touched(found, now).map(Some),
            None => self.load(&hash_token(token), Some(key), now),
        }
    }

    /// Whether the request carries a session cookie at all (valid or not).
    pub fn carries_cookie(&self, headers: &HeaderMap) -> bool {
        find_cookie(headers, &self.cookie_name).is_some()
    }

    /// The session token carried by the request's cookie, if well formed.
    fn token_from<'a>(&self, headers: &'a HeaderMap) -> Option<&'a [u8]> {
        well_formed_token(find_cookie(headers, &self.cookie_name)?.as_bytes())
    }

    /// One pass over the request's `Cookie` headers for the proxied path:
    /// the session cookie's value (the pair [`find_cookie`] finds) and what
    /// removing Gatehouse's cookies before forwarding will take (see
    /// `CookieScan::strip`).
    pub fn scan_cookies<'a>(&self, headers: &'a HeaderMap) -> CookieScan<'a> {
        scan_cookies(headers, &self.cookie_name, &self.device_cookie_name)
    }

    /// The token hash carried by the request's session cookie, if well formed.
    pub fn token_hash_from(&self, headers: &HeaderMap) -> Option<TokenHash> {
        self.token_from(headers).map(hash_token)
    }

    /// Finds the live session with this token hash. Expired sessions are removed.
    pub fn authenticate_hash(&self, hash: &TokenHash) -> Result<Option<Arc<Identity>>, StoreError> {
        let now = self.clock.now_millis();
        let cached = {
            let mut cache = sync::lock(&self.cache);
            cache
                .key_of(hash)
                .and_then(|key| self.cached(&mut cache, key, now))
        };
        match cached {
            Some(found) => self.touched(found, now).map(Some),
            // Without the token there is no cache key: read the store only.
            None => self.load(hash, None, now),
        }
    }

    /// The cached identity for `key`, if the cache has a live entry (an
    /// expired one is dropped, and the store decides). Records the use;
    /// `true` beside it when the use is due to be written back.
    fn cached(
        &self,
        cache: &mut Cache,
        key: CacheKey,
        now: UnixMillis,
    ) -> Option<(Arc<Identity>, bool)> {
        let c = cache.entries.get_mut(&key)?;
        if self.expiry.is_expired(&c.session, c.last_seen, now) {
            cache.remove_key(&key);
            return None;
        }
        c.last_seen = c.last_seen.max(now);
        let due = c.last_seen >= c.session.last_seen + self.touch_interval_ms;
        if due {
            c.session.last_seen = c.last_seen;
        }
        Some((c.identity.clone(), due))
    }

    /// A cache hit: served only while the cache may be trusted (see
    /// [`Sessions::trust_cache`]); the use is written back in the
    /// background when it is due.
    fn touched(
        &self,
        (identity, due): (Arc<Identity>, bool),
        now: UnixMillis,
    ) -> Result<Arc<Identity>, StoreError> {
        self.trust_cache(now)?;
        if due {
            self.touch_in_background(identity.token, now);
        }
        Ok(identity)
    }

    /// Reads the session from the store and, given its cache key, caches it
    /// (unless a revocation happened meanwhile).
    fn load(
        &self,
        hash: &TokenHash,
        key: Option<CacheKey>,
        now: UnixMillis,
    ) -> Result<Option<Arc<Identity>>, StoreError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let Some(mut session) = self.store.session(hash)? else {
            return Ok(None);
        };
        if self.expiry.is_expired(&session, session.last_seen, now) {
            self.delete_in_background(*hash);
            return Ok(None);
        }
        let groups = self.store.groups_of(session.user_id)?;
        let found = Arc::new(identity(&session, hash, groups));
        let due = now >= session.last_seen + self.touch_interval_ms;
        if due {
            session.last_seen = now;
        }
        if let Some(key) = key {
            let mut cache = sync::lock(&self.cache);
            if self.epoch.load(Ordering::Acquire) == epoch {
                if cache.len() >= CACHE_CAPACITY {
                    shrink(&mut cache, &self.expiry, now);
                }
                cache.insert(
                    key,
                    Cached {
                        last_seen: now,
                        identity: found.clone(),
                        session,
                    },
                );
            }
        }
        if due {
            self.touch_in_background(*hash, now);
        }
        Ok(Some(found))
    }

    /// Whether cached entries may still be served: while a shared store is
    /// out of reach, a logout elsewhere would go unheard, so the cache is
    /// trusted for `idle_timeout / 10` only.
    fn trust_cache(&self, now: UnixMillis) -> Result<(), StoreError> {
        if self.store.is_available() {
            if self.blind_since.load(Ordering::Relaxed) != 0 {
                self.blind_since.store(0, Ordering::Relaxed);
            }
            return Ok(());
        }
        let since =
            match self
                .blind_since
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => now,
                Err(earlier) => earlier,
            };
        if now.saturating_sub(since) <= self.expiry.idle_ms / 10 {
            return Ok(());
        }
        Err(StoreError::Unavailable(
            "the database has been out of reach for longer than idle_timeout/10; cached sessions are no longer trusted".into(),
        ))
    }

    /// Stores a new session and returns its token.
    pub async fn create(
        &self,
        user_id: u64,
        email: &str,
        origin: &SessionOrigin,
    ) -> Result<NewToken, StoreError> {
        let token = Sessions::new_token();
        let session = new_session(user_id, email, origin, self.clock.now_millis());
        let store = self.store.clone();
        let hash = token.hash;
        run_blocking(move || store.insert_session(&hash, &session)).await?;
        Ok(token)
    }

    /// Deletes one session; `false` if there was none.
    pub async fn revoke(&self, hash: TokenHash) -> Result<bool, StoreError> {
        self.forget(&hash);
        let store = self.store.clone();
        let existed = run_blocking(move || store.delete_session(&hash)).await;
        // Again after the delete: a lookup racing with it may have re-cached it.
        self.forget(&hash);
        existed
    }

    /// Deletes every session of a user, in the store and the cache.
    pub async fn revoke_user(&self, user_id: u64) -> Result<usize, StoreError> {
        let store = self.store.clone();
        let deleted = run_blocking(move || store.delete_user_sessions(user_id)).await?;
        self.forget_user(user_id);
        Ok(deleted.len())
    }

    /// Drops a session from the cache; call it after the store change.
    pub fn forget(&self, hash: &TokenHash) {
        let mut cache = sync::lock(&self.cache);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        cache.remove_hash(hash);
        drop(cache);
        self.live.end_session(hash);
    }

    /// Drops a *live* session's cached copy so the next request reads the
    /// stored record (after a change to it, such as a new email). Not an
    /// ending: a session that ends goes through [`Sessions::forget`].
    pub fn refresh(&self, hash: &TokenHash) {
        let mut cache = sync::lock(&self.cache);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        cache.remove_hash(hash);
    }

    /// Drops every cached session of one user, so an operator's disable or
    /// delete takes effect on the very next request; call it after the store
    /// change.
    pub fn forget_user(&self, user_id: u64) {
        let mut cache = sync::lock(&self.cache);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        cache.retain(|c| c.session.user_id != user_id);
        drop(cache);
        self.live.end_user(user_id);
    }

    /// Ends the live connections (WebSockets, streams) whose session has
    /// reached its idle or absolute expiry, or is gone from the store
    /// (revoked by another instance, or while the connection was being
    /// set up). Called every second or so; uses the cache where it can, so
    /// an open connection does not count as use of its session.
    pub async fn end_expired_live(&self) -> Result<(), StoreError> {
        let sessions = self.live.sessions();
        if sessions.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_millis();
        let mut ended = Vec::new();
        let mut uncached = Vec::new();
        {
            let cache = sync::lock(&self.cache);
            for hash in sessions {
                match cache.get_by_hash(&hash) {
                    Some(c) if self.expiry.is_expired(&c.session, c.last_seen, now) => {
                        ended.push(hash)
                    }
                    Some(_) => {}
                    None => uncached.push(hash),
                }
            }
        }
        if !uncached.is_empty() {
            let (store, expiry) = (self.store.clone(), self.expiry);
            let gone = run_blocking(move || {
                let mut gone = Vec::new();
                for hash in uncached {
                    match store.session(&hash)? {
                        Some(s) if !expiry.is_expired(&s, s.last_seen, now) => {}
                        _ => gone.push(hash),
                    }
                }
                Ok(gone)
            })
            .await?;
            ended.extend(gone);
        }
        for hash in ended {
            let n = self.live.end_session(&hash);
            if n > 0 {
                tracing::info!(
                    connections = n,
                    "session ended; closing its live connections"
                );
            }
        }
        Ok(())
    }

    /// Drops what another instance ended (announced by a shared store).
    pub fn forget_revoked(&self, revoked: crate::store::Revoked) {
        match revoked {
            crate::store::Revoked::Session(hash) => self.forget(&hash),
            crate::store::Revoked::All => {
                let mut cache = sync::lock(&self.cache);
                self.epoch.fetch_add(1, Ordering::AcqRel);
                cache.clear();
            }
        }
    }

    /// The last use of a session as this process saw it (it may be newer
    /// than the stored value, which is written back lazily).
    pub fn last_seen(&self, hash: &TokenHash) -> Option<UnixMillis> {
        sync::lock(&self.cache)
            .get_by_hash(hash)
            .map(|c| c.last_seen)
    }

    /// Whether a stored session is past its idle or absolute limit, given
    /// its last use.
    pub fn is_expired(&self, session: &Session, last_seen: UnixMillis) -> bool {
        self.expiry
            .is_expired(session, last_seen, self.clock.now_millis())
    }

    /// Drops expired entries from the cache; the store is swept separately.
    pub fn prune_cache(&self) {
        let now = self.clock.now_millis();
        sync::lock(&self.cache).retain(|c| !self.expiry.is_expired(&c.session, c.last_seen, now));
    }

    /// `Set-Cookie` value that hands `token` to the client.
    pub fn set_cookie(&self, token: &str) -> String {
        self.cookie(
            &self.cookie_name,
            token.to_string(),
            self.max_age_secs,
            self.same_site,
        )
    }

    /// `Set-Cookie` value that makes the client forget its session cookie.
    pub fn clear_cookie(&self) -> String {
        self.cookie(&self.cookie_name, String::new(), 0, self.same_site)
    }

    /// `Set-Cookie` value for the known-device mark; only ever needed by
    /// same-origin sign-in requests, hence `SameSite=Strict`.
    pub fn set_device_cookie(&self, mark: &str) -> String {
        self.cookie(
            &self.device_cookie_name,
            mark.to_string(),
            DEVICE_COOKIE_MAX_AGE_SECS,
            SameSite::Strict,
        )
    }

    fn cookie(&self, name: &str, value: String, max_age_secs: i64, same_site: SameSite) -> String {
        let mut c = Cookie::build((name.to_string(), value))
            .http_only(true)
            .secure(self.secure)
            .same_site(same_site)
            .path("/")
            .max_age(cookie::time::Duration::seconds(max_age_secs))
            .build();
        if let Some(d) = &self.domain {
            c.set_domain(d.clone());
        }
        c.to_string()
    }

    /// Removes Gatehouse's cookies from `Cookie` headers before forwarding.
    pub fn strip_cookie(&self, headers: &mut HeaderMap) {
        strip_named_cookies(headers, &[&self.cookie_name, &self.device_cookie_name]);
    }

    /// [`Sessions::strip_cookie`], told by [`Sessions::scan_cookies`] (of
    /// the same, unchanged headers) what is there: nothing to do when none
    /// of the cookies is ours and there is one header, and the header just
    /// goes when all of them are ours (the usual request: the session
    /// cookie alone). Anything else is rebuilt as `strip_cookie` does.
    pub fn strip_scanned_cookies(&self, headers: &mut HeaderMap, scan: CookieStrip) {
        strip_scanned_cookies(
            headers,
            scan,
            &[&self.cookie_name, &self.device_cookie_name],
        );
    }

    /// Queues a session use for the store. One background task writes the
    /// queue, a batch per transaction, while uses keep arriving: a burst of
    /// many distinct sessions (each one's first use after a restart is due)
    /// costs a few transactions and one blocking thread, not a thread and a
    /// transaction per session competing for the store's write lock.
    fn touch_in_background(&self, hash: TokenHash, now: UnixMillis) {
        let mut touches = sync::lock(&self.touches);
        if !touches.queue(hash, now) || touches.writing {
            return;
        }
        touches.writing = true;
        drop(touches);
        let (store, touches) = (self.store.clone(), self.touches.clone());
        tokio::task::spawn_blocking(move || {
            // Should the store panic, the next use starts a new writer.
            let _stopped = StoppedWriter(&touches);
            while let Some(batch) = sync::lock(&touches).next_batch() {
                if let Err(e) = store.touch_sessions(&batch) {
                    tracing::warn!(error = %e, sessions = batch.len(), "could not record session use");
                }
            }
        });
    }

    /// Writes the session uses still queued (at shutdown).
    pub fn write_queued_touches(&self) -> Result<(), StoreError> {
        let batch: Vec<_> = sync::lock(&self.touches).pending.drain().collect();
        if batch.is_empty() {
            return Ok(());
        }
        self.store.touch_sessions(&batch)
    }

    fn delete_in_background(&self, hash: TokenHash) {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.delete_session(&hash) {
                tracing::warn!(error = %e, "could not delete expired session");
            }
        });
    }
}

/// Most session uses queued for the store at once. Past it a use is not
/// recorded: that only shortens the session (its idle expiry counts from
/// the last use the store has), and 100,000 distinct sessions due while
/// the writer is still busy is far past any real burst.
const MAX_QUEUED_TOUCHES: usize = 100_000;
/// Most session uses written in one transaction: a sign-in's own write
/// waits for the transaction in progress, so it stays short (milliseconds
/// on redb) even when a burst has queued many more.
const MAX_TOUCHES_PER_TRANSACTION: usize = 4096;

/// Session uses not yet written, latest use per session.
#[derive(Default)]
struct Touches {
    pending: HashMap<TokenHash, UnixMillis>,
    /// A background task is writing the queue (and will take what is added
    /// meanwhile).
    writing: bool,
}

impl Touches {
    /// False when the queue is full and `hash` is not in it.
    fn queue(&mut self, hash: TokenHash, at: UnixMillis) -> bool {
        let full = self.pending.len() >= MAX_QUEUED_TOUCHES;
        match self.pending.entry(hash) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let latest = e.get_mut();
                *latest = (*latest).max(at);
                true
            }
            std::collections::hash_map::Entry::Vacant(_) if full => false,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(at);
                true
            }
        }
    }

    /// Up to [`MAX_TOUCHES_PER_TRANSACTION`] queued uses, or `None` (and
    /// the writer stops, handing back the queue's memory) when nothing is.
    fn next_batch(&mut self) -> Option<Vec<(TokenHash, UnixMillis)>> {
        if self.pending.is_empty() {
            self.pending = HashMap::new();
            self.writing = false;
            return None;
        }
        if self.pending.len() <= MAX_TOUCHES_PER_TRANSACTION {
            return Some(self.pending.drain().collect());
        }
        let hashes: Vec<TokenHash> = self
            .pending
            .keys()
            .take(MAX_TOUCHES_PER_TRANSACTION)
            .copied()
            .collect();
        Some(
            hashes
                .into_iter()
                .filter_map(|hash| Some((hash, self.pending.remove(&hash)?)))
                .collect(),
        )
    }
}

/// Marks the queue's writer stopped if it panics (it stops itself, in
/// [`Touches::next_batch`], when the queue is empty).
struct StoppedWriter<'a>(&'a Mutex<Touches>);

impl Drop for StoppedWriter<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            sync::lock(self.0).writing = false;
        }
    }
}

/// Longest `User-Agent` kept with a session.
const MAX_USER_AGENT_CHARS: usize = 256;

/// A fresh session record for `user_id`, opened now from `origin`.
pub fn new_session(user_id: u64, email: &str, origin: &SessionOrigin, now: UnixMillis) -> Session {
    Session {
        user_id,
        email: email.to_string(),
        created_at: now,
        last_seen: now,
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
    }
}

/// The origin of a request as kept on its session: the client address and
/// a bounded `User-Agent` without control characters.
pub fn origin_of(ip: std::net::IpAddr, headers: &HeaderMap) -> SessionOrigin {
    let user_agent = headers
        .get(http::header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .map(|ua| {
            ua.chars()
                .filter(|c| !c.is_control())
                .take(MAX_USER_AGENT_CHARS)
                .collect::<String>()
        })
        .filter(|ua| !ua.trim().is_empty());
    SessionOrigin {
        ip: Some(ip.to_string()),
        user_agent,
    }
}

fn identity(session: &Session, hash: &TokenHash, groups: Vec<String>) -> Identity {
    // Group names are checked (a-z 0-9 - _ .) before they are stored.
    let groups_header = (!groups.is_empty())
        .then(|| HeaderValue::from_str(&groups.join(",")).ok())
        .flatten();
    Identity {
        groups: Arc::from(groups),
        groups_header,
        user_id: session.user_id,
        email: Arc::from(session.email.as_str()),
        token: *hash,
        user_id_header: HeaderValue::from(session.user_id),
        // Normalised emails hold no control characters; UTF-8 passes as bytes.
        email_header: HeaderValue::from_bytes(session.email.as_bytes())
            .unwrap_or_else(|_| HeaderValue::from_static("")),
    }
}

/// Makes room in a full cache: expired entries go, and if that is not
/// enough, an arbitrary half. One pass per half-capacity inserts keeps the
/// cost per lookup constant however many sessions are in use.
fn shrink(cache: &mut Cache, expiry: &SessionExpiry, now: UnixMillis) {
    cache.retain(|c| !expiry.is_expired(&c.session, c.last_seen, now));
    if cache.len() >= CACHE_CAPACITY / 2 {
        let mut keep = false;
        cache.retain(|_| {
            keep = !keep;
            keep
        });
    }
}

/// `token` if it has the shape of a session token (43 base64url
/// characters); anything else cannot name a session.
fn well_formed_token(token: &[u8]) -> Option<&[u8]> {
    let well_formed = token.len() == TOKEN_LEN
        && token
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(token)
}

/// What [`Sessions::scan_cookies`] found in a request's `Cookie` headers.
pub struct CookieScan<'a> {
    /// The session cookie's value, well formed or not (as bytes: a token
    /// is ASCII, so nothing is gained by checking for UTF-8 first).
    pub token: Option<&'a [u8]>,
    /// What removing Gatehouse's cookies takes.
    pub strip: CookieStrip,
}

/// Counts from [`Sessions::scan_cookies`] for
/// [`Sessions::strip_scanned_cookies`].
#[derive(Debug, Default, Clone, Copy)]
pub struct CookieStrip {
    /// `Cookie` headers.
    headers: u32,
    /// Pairs named as Gatehouse's session or device cookie.
    ours: u32,
    /// Every other pair.
    others: u32,
}

/// One pass over the `Cookie` headers: the first value of cookie `session`
/// (the pair [`find_cookie`] finds, as bytes: a value that is not UTF-8 is
/// kept here, and is no well-formed token), and how many pairs are named
/// `session` or `device` and how many are not.
fn scan_cookies<'a>(headers: &'a HeaderMap, session: &str, device: &str) -> CookieScan<'a> {
    let (session, device) = (session.as_bytes(), device.as_bytes());
    let mut scan = CookieScan {
        token: None,
        strip: CookieStrip::default(),
    };
    let mut token_seen = false;
    for value in headers.get_all(http::header::COOKIE) {
        scan.strip.headers += 1;
        for pair in CookiePairs::of(value.as_bytes()) {
            let (name, value) = split_pair(pair);
            if name == session {
                scan.strip.ours += 1;
                // The first `name=value` decides, as in `find_cookie`.
                if let (false, Some(value)) = (token_seen, value) {
                    token_seen = true;
                    scan.token = Some(trim_quotes(value));
                }
            } else if name == device {
                scan.strip.ours += 1;
            } else {
                scan.strip.others += 1;
            }
        }
    }
    scan
}

/// [`strip_named_cookies`] for headers [`scan_cookies`] counted (with
/// `names` = its `session` and `device`): the two common cases take no
/// rebuilding.
fn strip_scanned_cookies(headers: &mut HeaderMap, scan: CookieStrip, names: &[&str]) {
    if scan.ours == 0 && scan.headers <= 1 {
        return;
    }
    if scan.others == 0 {
        headers.remove(http::header::COOKIE);
        return;
    }
    strip_named_cookies(headers, names);
}

/// SHA-256 of a token: enough for 256-bit random secrets (no stretching needed).
pub fn hash_token(token: impl AsRef<[u8]>) -> TokenHash {
    Sha256::digest(token).into()
}

/// `value` without the double quotes a cookie value may be wrapped in, as
/// `str::trim_matches('"')` would cut them.
fn trim_quotes(mut value: &[u8]) -> &[u8] {
    while let [b'"', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b'"'] = value {
        value = rest;
    }
    value
}

/// Every non-empty `name=value` pair of every `Cookie` header, trimmed.
/// Parsed as bytes: a cookie the upstream app set with non-ASCII bytes must
/// neither hide Gatehouse's cookie nor keep it from being stripped.
fn cookie_pairs(headers: &HeaderMap) -> CookiePairs<'_> {
    CookiePairs {
        headers: Some(headers.get_all(http::header::COOKIE).iter()),
        rest: &[],
    }
}

/// A plain loop rather than a `flat_map` of `split`s: this runs up to three
/// times on every proxied request.
struct CookiePairs<'a> {
    /// `None`: the pairs of one value only.
    headers: Option<http::header::ValueIter<'a, http::HeaderValue>>,
    rest: &'a [u8],
}

impl<'a> CookiePairs<'a> {
    /// The pairs of one header value.
    fn of(value: &'a [u8]) -> CookiePairs<'a> {
        CookiePairs {
            headers: None,
            rest: value,
        }
    }
}

impl<'a> Iterator for CookiePairs<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                self.rest = self.headers.as_mut()?.next()?.as_bytes();
                continue;
            }
            let (pair, rest) = match memchr::memchr(b';', self.rest) {
                Some(semi) => (&self.rest[..semi], &self.rest[semi + 1..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            let pair = pair.trim_ascii();
            if !pair.is_empty() {
                return Some(pair);
            }
        }
    }
}

/// A pair's name and, if it has an `=`, its value; both trimmed.
fn split_pair(pair: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memchr(b'=', pair) {
        Some(eq) => (pair[..eq].trim_ascii(), Some(pair[eq + 1..].trim_ascii())),
        None => (pair, None),
    }
}

/// The first value of cookie `name` across all `Cookie` headers (`None` if
/// that value is not text).
pub fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = cookie_pairs(headers).find_map(|pair| match split_pair(pair) {
        (n, Some(value)) if n == name.as_bytes() => Some(value),
        _ => None,
    })?;
    std::str::from_utf8(value).ok().map(|v| v.trim_matches('"'))
}

/// Removes the cookies called `names` from `Cookie` headers, keeping the
/// others, and joins what is left into one header (HTTP/2 may send several).
/// A lone header with nothing to remove is left as it is.
pub fn strip_named_cookies(headers: &mut HeaderMap, names: &[&str]) {
    let doomed = |pair: &[u8]| names.iter().any(|n| n.as_bytes() == split_pair(pair).0);
    let (mut dropped, mut kept_bytes) = (0, 0);
    for pair in cookie_pairs(headers) {
        if doomed(pair) {
            dropped += 1;
        } else {
            kept_bytes += pair.len() + 2;
        }
    }
    let several = headers
        .get_all(http::header::COOKIE)
        .iter()
        .nth(1)
        .is_some();
    if dropped == 0 && !several {
        return;
    }
    let mut joined = Vec::with_capacity(kept_bytes);
    for pair in cookie_pairs(headers).filter(|pair| !doomed(pair)) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(pair);
    }
    headers.remove(http::header::COOKIE);
    if !joined.is_empty()
        && let Ok(v) = http::HeaderValue::from_maybe_shared(bytes::Bytes::from(joined))
    {
        headers.insert(http::header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn queued_touches_keep_the_latest_use_and_stop_when_full() {
        let mut t = Touches::default();
        assert!(t.queue([1; 32], 500));
        assert!(t.queue([1; 32], 400));
        assert!(t.queue([2; 32], 100));
        t.writing = true;
        let mut batch = t.next_batch().unwrap();
        batch.sort();
        assert_eq!(batch, vec![([1; 32], 500), ([2; 32], 100)]);
        assert_eq!(t.next_batch(), None);
        assert!(!t.writing);

        for n in 0..MAX_QUEUED_TOUCHES as u64 {
            let mut hash = [0; 32];
            hash[..8].copy_from_slice(&n.to_le_bytes());
            assert!(t.queue(hash, n));
        }
        assert!(!t.queue([0xff; 32], 1), "a new session past the limit");
        assert!(t.queue([0; 32], 7), "a queued session is still updated");
        let mut written = HashMap::new();
        while let Some(batch) = t.next_batch() {
            assert!(!batch.is_empty() && batch.len() <= MAX_TOUCHES_PER_TRANSACTION);
            written.extend(batch);
        }
        assert_eq!(written.len(), MAX_QUEUED_TOUCHES);
        assert_eq!(written[&[0; 32]], 7);
        assert!(!t.writing);
    }

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(http::header::COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[tokio::test]
    async fn cached_sessions_expire_on_the_injected_clock() {
        use crate::store::traits::*;
        const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let clock = Clock::manual();
        let cfg = SessionConfig {
            cookie_name: "sid".into(),
            idle_timeout: 60 * MINUTE,
            absolute_timeout: 180 * MINUTE,
            same_site: SameSite::Lax,
            domain: None,
        };
        let sessions = Sessions::new(store.clone(), &cfg, false, clock);
        let live = |token: &NewToken| {
            let cookie = format!("sid={}", token.token);
            sessions
                .authenticate(&headers(&[&cookie]))
                .unwrap()
                .is_some()
        };
        let user = store
            .add_user("u@x.io", "$argon2id$unused", clock.now_millis())
            .unwrap()
            .unwrap();
        let (used, unused) = (Sessions::new_token(), Sessions::new_token());
        for t in [&used, &unused] {
            let origin = SessionOrigin::default();
            let session = new_session(user.id, "u@x.io", &origin, clock.now_millis());
            store.insert_session(&t.hash, &session).unwrap();
            // Read once: from here on both are served from the cache.
            assert!(live(t));
        }
        // Used every 50 minutes, one stays; the other, idle for 100, is gone.
        clock.advance(50 * MINUTE);
        assert!(live(&used));
        clock.advance(50 * MINUTE);
        assert!(live(&used));
        assert!(!live(&unused));
        assert_eq!(sessions.last_seen(&unused.hash), None);
        // Still in use, it ends at the absolute limit (180 minutes).
        clock.advance(50 * MINUTE);
        assert!(live(&used));
        assert!(sessions.last_seen(&used.hash).is_some());
        clock.advance(50 * MINUTE);
        assert!(!live(&used));
        assert_eq!(sessions.last_seen(&used.hash), None);
    }

    #[test]
    fn one_scan_finds_and_strips_as_the_separate_steps_do() {
        let cases: &[&[&str]] = &[
            &[],
            &["sid=tok"],
            &["sid=tok; a=1"],
            &["a=1"],
            &["a=1", "b=2"],
            &["a=1; sid=first", "sid=second; sid_device=d"],
            &["sid_device=d"],
            &["sid", "sid=late"],
            &["sid=\"quoted\""],
            &["sid=tok", "sid=again"],
            &[" ; sid=tok ;; "],
        ];
        let mut stripped_some = 0;
        for &cookies in cases {
            let before = headers(cookies);
            let scan = scan_cookies(&before, "sid", "sid_device");
            let found = find_cookie(&before, "sid").map(str::as_bytes);
            assert_eq!(scan.token, found, "{cookies:?}");
            let strip = scan.strip;
            let mut expected = before.clone();
            strip_named_cookies(&mut expected, &["sid", "sid_device"]);
            let mut got = before.clone();
            strip_scanned_cookies(&mut got, strip, &["sid", "sid_device"]);
            assert_eq!(got, expected, "{cookies:?}");
            if got != before {
                stripped_some += 1;
            }
        }
        assert!(stripped_some >= 5, "the cases include real stripping");
        // A non-UTF-8 value is found (`find_cookie` has no text for it),
        // names no session, and is still stripped.
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_bytes(b"sid=\xff; a=1").unwrap(),
        );
        let scan = scan_cookies(&h, "sid", "sid_device");
        assert_eq!(find_cookie(&h, "sid"), None);
        assert_eq!(scan.token, Some(&b"\xff"[..]));
        assert_eq!(scan.token.and_then(well_formed_token), None);
        let strip = scan.strip;
        strip_scanned_cookies(&mut h, strip, &["sid", "sid_device"]);
        assert_eq!(h[http::header::COOKIE], "a=1");
    }

    #[test]
    fn finds_cookie_among_others_and_across_headers() {
        let h = headers(&["a=1; sid=abc", "b=2"]);
        assert_eq!(find_cookie(&h, "sid"), Some("abc"));
        assert_eq!(find_cookie(&h, "b"), Some("2"));
        assert_eq!(find_cookie(&h, "si"), None);
        assert_eq!(find_cookie(&headers(&["sid"]), "sid"), None);
    }

    #[test]
    fn stripping_keeps_other_cookies_and_merges_headers() {
        let mut h = headers(&["a=1; sid=secret", "sid_device=x; b=2", "sid"]);
        strip_named_cookies(&mut h, &["sid", "sid_device"]);
        assert_eq!(h.get_all(http::header::COOKIE).iter().count(), 1);
        assert_eq!(h[http::header::COOKIE], "a=1; b=2");
        let mut only = headers(&["sid=1"]);
        strip_named_cookies(&mut only, &["sid"]);
        assert!(only.get(http::header::COOKIE).is_none());
        let mut none_ours = headers(&["a=1;  b=2"]);
        strip_named_cookies(&mut none_ours, &["sid"]);
        assert_eq!(none_ours[http::header::COOKIE], "a=1;  b=2");
    }

    #[test]
    fn a_non_ascii_cookie_neither_hides_nor_shelters_ours() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_bytes(b"pref=caf\xc3\xa9; sid=abc; x=\xff").unwrap(),
        );
        assert_eq!(find_cookie(&h, "sid"), Some("abc"));
        assert_eq!(find_cookie(&h, "x"), None, "not text");
        strip_named_cookies(&mut h, &["sid"]);
        assert_eq!(find_cookie(&h, "sid"), None);
        assert_eq!(
            h[http::header::COOKIE].as_bytes(),
            b"pref=caf\xc3\xa9; x=\xff"
        );
    }

    fn cached(user_id: u64, token: &str) -> Cached {
        let session = new_session(user_id, "a@example.com", &SessionOrigin::default(), 1);
        Cached {
            identity: Arc::new(identity(&session, &hash_token(token), Vec::new())),
            session,
            last_seen: 1,
        }
    }

    #[test]
    fn cache_indexes_stay_in_step() {
        let keyer = TokenKeyer::new();
        let (a, b) = (Sessions::new_token(), Sessions::new_token());
        let mut cache = Cache::default();
        cache.insert(keyer.key(a.token.as_bytes()), cached(1, &a.token));
        cache.insert(keyer.key(b.token.as_bytes()), cached(2, &b.token));
        assert_eq!((cache.entries.len(), cache.keys.len()), (2, 2));
        // Revocation knows only the SHA-256: the keyed entry goes with it.
        cache.remove_hash(&a.hash);
        assert!(!cache.entries.contains_key(&keyer.key(a.token.as_bytes())));
        assert!(cache.get_by_hash(&b.hash).is_some());
        cache.retain(|c| c.session.user_id != 2);
        assert_eq!((cache.entries.len(), cache.keys.len()), (0, 0));
        // Re-inserting a token replaces its entry, never duplicates it.
        cache.insert(keyer.key(a.token.as_bytes()), cached(1, &a.token));
        cache.insert(keyer.key(a.token.as_bytes()), cached(1, &a.token));
        assert_eq!((cache.entries.len(), cache.keys.len()), (1, 1));
    }

    #[test]
    fn cache_keys_depend_on_the_secret_and_the_whole_token() {
        let (k1, k2) = (TokenKeyer::new(), TokenKeyer::new());
        let t = Sessions::new_token().token;
        assert_eq!(k1.key(t.as_bytes()), k1.key(t.as_bytes()));
        assert_ne!(k1.key(t.as_bytes()), k2.key(t.as_bytes()));
        let mut other = t.clone().into_bytes();
        other[TOKEN_LEN - 1] = if other[TOKEN_LEN - 1] == b'A' {
            b'B'
        } else {
            b'A'
        };
        assert_ne!(k1.key(t.as_bytes()), k1.key(&other));
    }

    #[test]
    fn tokens_are_random_and_well_formed() {
        let a = Sessions::new_token();
        let b = Sessions::new_token();
        assert_eq!(a.token.len(), TOKEN_LEN);
        assert_ne!(a.token, b.token);
        assert_eq!(hash_token(&a.token), a.hash);
    }
}
