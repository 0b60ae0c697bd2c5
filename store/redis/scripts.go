package redis

import goredis "github.com/redis/go-redis/v9"

// The Lua scripts below are what make multi-key updates atomic: Redis runs a
// script to the end before it serves any other command, so the entry, the
// key index, the expiry index and the version counter never disagree, and a
// compare-and-swap cannot interleave with another write.
//
// Every key a script touches is passed in KEYS, and all of them share one
// hash tag (see KV), so the scripts also run on Redis Cluster.

// luaCmp compares two decimal integers written by strconv.FormatInt.
// Lua 5.1 numbers are doubles, exact only up to 2^53, while Unix nanoseconds
// are near 2^61, so tonumber on the whole string would round expirations;
// comparing sign, length and then 9-digit chunks is exact. String comparison
// with < would do for equal lengths but follows the server's collation
// locale, which this does not depend on.
const luaCmp = `
local function cmp(a, b)
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then
    if na then return -1 end
    return 1
  end
  local sign = 1
  if na then
    a, b, sign = string.sub(a, 2), string.sub(b, 2), -1
  end
  if #a ~= #b then
    if #a < #b then return -sign end
    return sign
  end
  for i = 1, #a, 9 do
    local x, y = tonumber(string.sub(a, i, i + 8)), tonumber(string.sub(b, i, i + 8))
    if x ~= y then
      if x < y then return -sign end
      return sign
    end
  end
  return 0
end
`

// writeScript is Put and CompareAndSwap.
//
//	KEYS[1] version counter   KEYS[2] key index   KEYS[3] expiry index   KEYS[4] entry
//	ARGV[1] the user's key
//	ARGV[2] expected version: "" for a Put, "0" for "absent or expired"
//	ARGV[3] now, Unix nanoseconds, from the store's clock
//	ARGV[4] write id: random, unique to this call
//	ARGV[5] value   ARGV[6] metadata ("" for none)
//	ARGV[7] expiration, Unix nanoseconds ("" for none)
//	ARGV[8] expiration in Unix milliseconds, the expiry index's score
//	ARGV[9] Redis TTL of the entry in milliseconds
//
// It returns {1, version} on success and {0, current version} on a
// mismatch, "0" meaning absent. Versions travel as strings: after INCR the
// script reads the counter back with GET, because a Lua number would lose
// digits beyond 2^53.
//
// The write id makes a retried call safe. go-redis resends a command whose
// connection broke before the reply arrived; if the first send had already
// written, the entry carries this call's id and the retry reports that write
// instead of a conflict with itself (which would make memory append a turn
// twice) or a second version.
const writeScript = luaCmp + `
local cur = redis.call('HMGET', KEYS[4], 'v', 'x', 'w')
if cur[3] == ARGV[4] then
  return {1, cur[1]}
end
if ARGV[2] ~= '' then
  local current = '0'
  if cur[1] and ((not cur[2]) or cmp(cur[2], ARGV[3]) > 0) then
    current = cur[1]
  end
  if current ~= ARGV[2] then
    return {0, current}
  end
end
redis.call('INCR', KEYS[1])
local ver = redis.call('GET', KEYS[1])
-- DEL first: it drops the fields and the Redis TTL of the entry replaced.
redis.call('DEL', KEYS[4])
local f = {'v', ver, 'w', ARGV[4], 'd', ARGV[5]}
if ARGV[6] ~= '' then
  f[#f + 1] = 'm'
  f[#f + 1] = ARGV[6]
end
if ARGV[7] ~= '' then
  f[#f + 1] = 'x'
  f[#f + 1] = ARGV[7]
end
redis.call('HSET', KEYS[4], unpack(f))
if ARGV[7] ~= '' then
  redis.call('PEXPIRE', KEYS[4], ARGV[9])
  redis.call('ZADD', KEYS[3], ARGV[8], ARGV[1])
else
  redis.call('ZREM', KEYS[3], ARGV[1])
end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return {1, ver}
`

// pruneScript removes entries that are gone: deleted by Redis's own expiry
// (their hash is missing) or expired by the store's clock. It checks again
// inside the script, so an entry written anew since the caller looked is
// kept.
//
//	KEYS[1] key index   KEYS[2] expiry index   KEYS[3..n] entries
//	ARGV[1] now, Unix nanoseconds   ARGV[2..n-1] the user's keys of KEYS[3..n]
//
// It returns how many keys it removed from the key index.
const pruneScript = luaCmp + `
local removed = 0
for i = 3, #KEYS do
  local e = redis.call('HMGET', KEYS[i], 'v', 'x')
  if (not e[1]) or (e[2] and cmp(e[2], ARGV[1]) <= 0) then
    local member = ARGV[i - 1]
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[2], member)
    removed = removed + redis.call('ZREM', KEYS[1], member)
  end
end
return removed
`

// acquireScript grants a lock and its fencing token in one step, so tokens
// grow in the order leases are granted. A lease whose reply was lost and is
// asked for again with the same token is granted again, not refused as
// "held by someone".
//
//	KEYS[1] lock   KEYS[2] fencing counter   ARGV[1] token   ARGV[2] TTL in ms
//	ARGV[3] the counter's TTL in ms
//
// It returns {1, fencing token} or {0, remaining TTL of the holder in ms}.
const acquireScript = `
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, redis.call('GET', KEYS[2])}
end
if cur then
  return {0, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {1, redis.call('GET', KEYS[2])}
`

// renewScript extends a lease only if it is still ours.
//
//	KEYS[1] lock   ARGV[1] token   ARGV[2] TTL in ms
const renewScript = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`

// releaseScript deletes a lock only if it is still ours, so a holder whose
// lease expired cannot release the next holder's, and announces the release
// so waiters on every node retry at once instead of at their next poll.
//
//	KEYS[1] lock   ARGV[1] token   ARGV[2] channel   ARGV[3] the lock's name
const releaseScript = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
`

// kvScripts are the scripts a KV runs. Each KV makes its own: a
// *goredis.Script caches its digest behind a mutex, and keeping them per
// store leaves the package without shared state.
type kvScripts struct {
	write, prune *goredis.Script
}

func newKVScripts() kvScripts {
	return kvScripts{write: goredis.NewScript(writeScript), prune: goredis.NewScript(pruneScript)}
}

// lockScripts are the scripts a Locker runs.
type lockScripts struct {
	acquire, renew, release *goredis.Script
}

func newLockScripts() lockScripts {
	return lockScripts{
		acquire: goredis.NewScript(acquireScript),
		renew:   goredis.NewScript(renewScript),
		release: goredis.NewScript(releaseScript),
	}
}
