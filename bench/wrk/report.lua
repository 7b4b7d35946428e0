-- wrk script for bench/run.py.  Arguments after "--":
--   method=POST          request method (default GET)
--   body=PATH            file whose bytes are the request body (Content-Type: application/json)
--   statuses=1           count responses by status (slows wrk: only where needed)
-- done() prints one line "BENCH_JSON {...}" with the figures run.py reads.

local count_statuses = false
statuses = {}

function init(args)
   for _, arg in ipairs(args) do
      local key, value = arg:match("^([%w_]+)=(.*)$")
      if key == "method" then
         wrk.method = value
      elseif key == "body" then
         local file = assert(io.open(value, "rb"))
         wrk.body = file:read("*a")
         file:close()
         wrk.headers["Content-Type"] = "application/json"
      elseif key == "statuses" then
         count_statuses = value == "1"
      end
   end
   if not count_statuses then
      -- wrk skips header and body parsing when response is nil after init().
      response = nil
   end
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

local function json_number(n)
   return string.format("%.17g", n)
end

function done(summary, latency, requests)
   local counted = {}
   for _, thread in ipairs(threads) do
      local t = thread:get("statuses") or {}
      for status, n in pairs(t) do
         counted[status] = (counted[status] or 0) + n
      end
   end
   local parts = {}
   for status, n in pairs(counted) do
      table.insert(parts, string.format('"%d":%d', status, n))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%s,"bytes":%s,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%s,"mean":%s,"max":%s,"stdev":%s,"p50":%s,"p90":%s,"p99":%s,"p999":%s},' ..
      '"statuses":{%s}}\n',
      summary.requests, json_number(summary.duration), json_number(summary.bytes),
      e.connect, e.read, e.write, e.status, e.timeout,
      json_number(latency.min), json_number(latency.mean), json_number(latency.max),
      json_number(latency.stdev),
      json_number(latency:percentile(50)), json_number(latency:percentile(90)),
      json_number(latency:percentile(99)), json_number(latency:percentile(99.9)),
      table.concat(parts, ",")))
end
