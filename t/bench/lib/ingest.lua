-- t/bench/lib/ingest.lua - wrk script for t/bench/ingest-1 / ingest-50:
-- POST /api/ingest with MessagePack bodies of PER readings, built here (a
-- fixed layout, new seq every reading), keep-alive, one device token per
-- lift taken round robin from TOKENS (one token a line).
--
--   wrk -s ingest.lua URL -- TOKENS PER

local tokens = {}
local per = 1
local seq = 0
local nthreads = 1
local tid = 0
local base_ms = 0
local lift = 0

local threads = {}

function setup(thread)
    thread:set("tid", #threads)
    table.insert(threads, thread)
end

local function be(n, bytes)
    local t = {}
    for i = bytes, 1, -1 do
        t[i] = string.char(n % 256)
        n = math.floor(n / 256)
    end
    return table.concat(t)
end

local function str(s)
    return string.char(0xa0 + #s) .. s
end

function init(args)
    for line in io.lines(args[1]) do
        if #line > 0 then
            table.insert(tokens, line)
        end
    end
    per = tonumber(args[2]) or 1
    nthreads = tonumber(args[3]) or 2
    tid = tonumber(wrk.thread:get("tid")) or 0
    base_ms = os.time() * 1000
    lift = tid
end

-- {"seq": s, "ts": t, "kind": "trip", "floor_from": 0, "floor_to": 7,
--  "direction": "up", "temperature": 21.5, "counters": {"trips": s}}
local function reading(s, ts)
    return string.char(0x88)
        .. str("seq") .. string.char(0xce) .. be(s, 4)
        .. str("ts") .. string.char(0xcf) .. be(ts, 8)
        .. str("kind") .. str("trip")
        .. str("floor_from") .. string.char(0)
        .. str("floor_to") .. string.char(7)
        .. str("direction") .. str("up")
        .. str("temperature") .. string.char(0xcb, 0x40, 0x35, 0x80, 0, 0, 0, 0, 0)
        .. str("counters") .. string.char(0x81) .. str("trips")
        .. string.char(0xce) .. be(s, 4)
end

function request()
    local parts = {}
    lift = (lift + nthreads) % #tokens
    for i = 1, per do
        seq = seq + 1
        -- unique across threads; ts a little behind now
        parts[i] = reading(seq * nthreads + tid, base_ms + (seq % 1000))
    end
    local body
    if per == 1 then
        body = parts[1]
    else
        local n = per
        local head = n < 16 and string.char(0x90 + n)
                     or string.char(0xdc) .. be(n, 2)
        body = head .. table.concat(parts)
    end
    return wrk.format("POST", nil, {
        ["Content-Type"] = "application/msgpack",
        ["Authorization"] = "Bearer " .. tokens[lift + 1],
    }, body)
end
