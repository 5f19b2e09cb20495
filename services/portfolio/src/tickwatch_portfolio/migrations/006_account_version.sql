-- A version on each account, bumped by every write of its state, so a write can say which state
-- it was judged against: one statement guarded by `version = <the version read>` is atomic
-- without holding a row lock across round trips (ledger/store.py's one-statement path for an
-- account whose state this process already holds). lock_account() now also answers it.

ALTER TABLE accounts ADD COLUMN version bigint NOT NULL DEFAULT 0;

DROP FUNCTION lock_account(text, text, numeric, text);

CREATE FUNCTION lock_account(p_user text, p_quote text, p_cash numeric, p_key text)
RETURNS TABLE (
    version         bigint,
    cash            numeric,
    reserved        numeric,
    realized_pnl    numeric,
    fees_paid       numeric,
    sell_fees       numeric,
    net_deposits    numeric,
    h_symbols       text[],
    h_quantities    numeric[],
    h_costs         numeric[],
    h_reserved      numeric[],
    key_fingerprint text,
    key_status      integer,
    key_body        text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM accounts a WHERE a.user_id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO accounts (user_id, quote_currency, cash, net_deposits)
        VALUES (p_user, p_quote, p_cash, p_cash) ON CONFLICT (user_id) DO NOTHING;
        IF FOUND AND p_cash > 0 THEN
            INSERT INTO deposits (user_id, amount, kind, value_before)
            VALUES (p_user, p_cash, 'deposit', 0);
        END IF;
        PERFORM 1 FROM accounts a WHERE a.user_id = p_user FOR UPDATE;
    END IF;
    RETURN QUERY
    SELECT a.version, a.cash, a.reserved, a.realized_pnl, a.fees_paid, a.sell_fees,
        a.net_deposits,
        ARRAY(SELECT h.symbol FROM holdings h
              WHERE h.user_id = p_user AND h.quantity > 0 ORDER BY h.symbol),
        ARRAY(SELECT h.quantity FROM holdings h
              WHERE h.user_id = p_user AND h.quantity > 0 ORDER BY h.symbol),
        ARRAY(SELECT h.cost FROM holdings h
              WHERE h.user_id = p_user AND h.quantity > 0 ORDER BY h.symbol),
        ARRAY(SELECT h.reserved FROM holdings h
              WHERE h.user_id = p_user AND h.quantity > 0 ORDER BY h.symbol),
        k.fingerprint, k.status, k.body::text
    FROM accounts a
    LEFT JOIN idempotency_keys k ON k.user_id = p_user AND k.key = p_key
    WHERE a.user_id = p_user;
END
$$;
