-- wrk script: sends each request with the next token from $TOKENS (one per line), round-robin.
-- Headers given with -H (wrk.headers) are kept: wrk.format replaces them when given a table.
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do
  tokens[#tokens + 1] = "Bearer " .. line
end
local i = 0
local headers = {}
init = function()
  for k, v in pairs(wrk.headers) do headers[k] = v end
end
request = function()
  i = i % #tokens + 1
  headers["Authorization"] = tokens[i]
  return wrk.format("GET", nil, headers)
end
