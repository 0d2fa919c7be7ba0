-- wrk script: every request carries a different well-formed unknown token (bentogate's format:
-- "bgt_" + 30 base62 + the CRC-32 checksum in 6 base62 digits, as bench/gen_tokens.py), so the
-- negative cache and the failure throttle work under churn instead of on one hot entry.
local bit = require("bit")
local B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if bit.band(c, 1) == 1 then c = bit.bxor(bit.rshift(c, 1), 0xEDB88320) else c = bit.rshift(c, 1) end
  end
  crc_table[i] = c
end
local function crc32(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do
    c = bit.bxor(bit.rshift(c, 8), crc_table[bit.band(bit.bxor(c, s:byte(i)), 0xFF)])
  end
  c = bit.bnot(c)
  if c < 0 then c = c + 4294967296 end
  return c
end
local function checksum(body)
  local n, out = crc32(body), {}
  for i = 6, 1, -1 do
    local d = n % 62
    out[i] = B62:sub(d + 1, d + 1)
    n = (n - d) / 62
  end
  return table.concat(out)
end
-- A random 20-character prefix per thread, then a 10-digit base62 counter: never repeats.
local prefix, counter = nil, 0
init = function()
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  local p = {}
  for i = 1, 20 do local d = math.random(0, 61); p[i] = B62:sub(d + 1, d + 1) end
  prefix = table.concat(p)
end
request = function()
  counter = counter + 1
  local n, digits = counter, {}
  for i = 10, 1, -1 do
    local d = n % 62
    digits[i] = B62:sub(d + 1, d + 1)
    n = (n - d) / 62
  end
  local body = "bgt_" .. prefix .. table.concat(digits)
  return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. body .. checksum(body) })
end
