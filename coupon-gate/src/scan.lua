-- One page of SCAN over the keys of the server that serves KEYS[1]'s slot. Called with a key of
-- the campaign so that a cluster connection sends it to the master holding the campaign; a
-- plain SCAN names no key and would go to any node.
-- ARGV: cursor, MATCH pattern, COUNT.
return redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
