-- wrk script for the many-connections memory check: each connection waits
-- about BENCH_INTERVAL_MS between requests, so thousands of keep-alive
-- connections stay open without queueing thousands of requests at once.
local interval = tonumber(os.getenv("BENCH_INTERVAL_MS") or "2000")

math.randomseed(os.time())

delay = function()
  return math.random(math.floor(interval / 2), math.floor(interval * 3 / 2))
end
