-- The return pages' live status (services/page/events.py): every change a driver sees (status, the
-- balance crediting reported, the checkout) is NOTIFYed on commit on 'order_status' with the
-- order's id as the payload, whoever made it (the page's consumers, any replica, an operator's SQL).
-- Each page process LISTENs on one connection and wakes the streams following that order.
CREATE FUNCTION notify_order_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('order_status', NEW.id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER orders_notify_status AFTER UPDATE ON orders FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.balance_minor IS DISTINCT FROM NEW.balance_minor
          OR OLD.payment_id IS DISTINCT FROM NEW.payment_id)
    EXECUTE FUNCTION notify_order_status();
