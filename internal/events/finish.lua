-- finish: mark an existing event planned.
--
-- KEYS[1] ev:{id}  HASH  the event
-- ARGV[1] finish time, unix ms (field fin; field done becomes "1")
--
-- Returns 1 if marked, 0 if the event hash is gone (not recreated).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'done', '1', 'fin', ARGV[1])
return 1
