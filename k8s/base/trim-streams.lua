-- Trims every Redis stream (a pub/sub topic of Dapr's pubsub.redis) to the entries some consumer group still needs.
-- A group (one per subscribing app id) needs the entries it has not read yet (after its last-delivered-id) and those
-- it read but has not acknowledged (its pending entries, which Dapr delivers again). So each stream keeps every entry
-- from the smallest, over its groups, of the group's last-delivered-id and its oldest pending id; a stream with no
-- group yet is left alone, since its first subscriber reads it from the start. One script, so no group is created or
-- reads between the look and the trim. Returns the number of entries removed.
--   redis-cli --eval k8s/base/trim-streams.lua
-- Redis 6.2 or newer (XTRIM MINID, SCAN TYPE); a single Redis, not a cluster (the streams are not passed as KEYS).

-- True when stream id `a` ("<ms>-<seq>") is older than `b`; compared as digit strings, so exact at any size.
local function older(a, b)
    local a_ms, a_seq = string.match(a, "^(%d+)-(%d+)$")
    local b_ms, b_seq = string.match(b, "^(%d+)-(%d+)$")
    local function less(x, y)
        if #x ~= #y then
            return #x < #y
        end
        return x < y
    end
    if a_ms ~= b_ms then
        return less(a_ms, b_ms)
    end
    return less(a_seq, b_seq)
end

local removed = 0
local cursor = "0"
repeat
    local page = redis.call("SCAN", cursor, "COUNT", 1000, "TYPE", "stream")
    cursor = page[1]
    for _, stream in ipairs(page[2]) do
        local keep_from = nil
        for _, group in ipairs(redis.call("XINFO", "GROUPS", stream)) do
            local fields = {}
            for i = 1, #group, 2 do
                fields[group[i]] = group[i + 1]
            end
            local needed = fields["last-delivered-id"]
            if fields["pending"] > 0 then
                local oldest_pending = redis.call("XPENDING", stream, fields["name"])[2]
                if older(oldest_pending, needed) then
                    needed = oldest_pending
                end
            end
            if keep_from == nil or older(needed, keep_from) then
                keep_from = needed
            end
        end
        if keep_from ~= nil then
            removed = removed + redis.call("XTRIM", stream, "MINID", keep_from)
        end
    end
until cursor == "0"
return removed
