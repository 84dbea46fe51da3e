-- now.lua is the prelude of every jobs script that needs the time: Redis's
-- clock in unix ms, rounded down (now, to compare with) and up (nowUp, to
-- add a delay to, so a job is never due before its delay has fully
-- passed). It is prepended to the script body.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nowUp = tonumber(t[1]) * 1000 + math.ceil(tonumber(t[2]) / 1000)
