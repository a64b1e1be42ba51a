create schema "Ops";
do $$ begin if not exists (select from pg_roles where rolname = 'aegis_test_reader') then create role aegis_test_reader; end if; end $$;
create type mood as enum ('sad', 'ok', 'happy');
create domain posint as integer check (value > 0);
create table types (
  i2 smallint, i4 integer, i8 bigint, n numeric, n12 numeric(12,2), r real, d double precision, m money, b boolean,
  t text, vc varchar(10), c char(5), by bytea, dt date, tm time, ttz timetz, ts timestamp, tstz timestamptz,
  iv interval, u uuid, j json, jb jsonb, ip inet, ci cidr, mac macaddr, e mood, dom posint, rng int4range, tsr tstzrange,
  ta text[], ia int[][], na numeric[]
);
insert into types values
 (1, 2, 3, 123456789012345678901234567890.123456789, 1234567890.12, 0.1, 0.6666666666666666, 12.34, true,
  'héllo', 'abc', 'ab', '\x00ff', '4713-01-01 BC', '24:00:00', '12:00+05', '-infinity', 'infinity',
  '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": 1,  "a": [1,2]}', '{"ключ": "значение", "n": 1.0}',
  '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', 'happy', 5, '[1,10)', '[2020-01-01,infinity)',
  '{"a","",NULL,"with \"quote\""}', '{{1,2},{3,NULL}}', '{1.10,NULL}'),
 (-32768, null, -9223372036854775808, 'NaN', null, 'Infinity', '-0', null, null, '', null, null, '', 'infinity', null, null,
  '2020-02-29 23:59:59.999999', '1999-12-31 23:59:59.999999+00', '-1 days', null, 'null', '[]', '::1', null, null, null, null, 'empty', null, '{}', '{}', null),
 (null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null);
create table public.parent_ref (id int primary key);
insert into public.parent_ref values (1), (2);
create table "Ops"."Order Items" (
  id bigint generated always as identity primary key,
  parent int references public.parent_ref(id),
  amount numeric(12,2) not null default 0 check (amount >= 0),
  note text default 'none',
  created timestamptz default now()
);
comment on table "Ops"."Order Items" is 'order lines';
comment on column "Ops"."Order Items".amount is 'in BRL';
grant select, insert on "Ops"."Order Items" to aegis_test_reader;
create index items_note on "Ops"."Order Items" (note) where note <> 'none';
create index items_lower on "Ops"."Order Items" (lower(note));
create function public.touch() returns trigger language plpgsql as $$ begin new.note := coalesce(new.note, 'x'); return new; end $$;
create trigger items_touch before insert on "Ops"."Order Items" for each row execute function public.touch();
alter table "Ops"."Order Items" enable row level security;
create policy items_reader on "Ops"."Order Items" for select to aegis_test_reader using (amount > 0);
insert into "Ops"."Order Items" (parent, amount, note) select (i % 2) + 1, i, 'n' || i from generate_series(1, 100) i;
create table public.child (id int, item bigint references "Ops"."Order Items"(id));
insert into public.child values (1, 5);
