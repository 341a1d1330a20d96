-- wrk script for the login storm: the same password sign-in, over and over.
-- bench/run sets BENCH_STORM_EMAIL and BENCH_STORM_PASSWORD.
local email = assert(os.getenv("BENCH_STORM_EMAIL"), "BENCH_STORM_EMAIL not set")
local password = assert(os.getenv("BENCH_STORM_PASSWORD"), "BENCH_STORM_PASSWORD not set")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"email":"%s","password":"%s"}', email, password)
