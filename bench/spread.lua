-- wrk script for the scale scenario: every request carries a session cookie
-- picked at random from BENCH_TOKENS_FILE (one token per line), so lookups
-- spread over many sessions instead of hitting one cached entry.
local name = assert(os.getenv("BENCH_COOKIE_NAME"), "BENCH_COOKIE_NAME not set")
local file = assert(os.getenv("BENCH_TOKENS_FILE"), "BENCH_TOKENS_FILE not set")

local cookies = {}
for line in io.lines(file) do
  if #line > 0 then
    cookies[#cookies + 1] = name .. "=" .. line
  end
end
assert(#cookies > 0, "no tokens in " .. file)

math.randomseed(os.time())
local headers = {}

request = function()
  headers["Cookie"] = cookies[math.random(#cookies)]
  return wrk.format(nil, nil, headers)
end
