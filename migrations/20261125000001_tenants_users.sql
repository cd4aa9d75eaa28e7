-- Tenants and their users. Emails are unique platform-wide because login asks for an
-- email and a password only.
CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CONSTRAINT tenants_name_not_blank CHECK (btrim(name) <> ''),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL CONSTRAINT users_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    email         text NOT NULL,
    display_name  text NOT NULL,
    role          text NOT NULL CONSTRAINT users_role_check CHECK (role IN ('agent', 'supervisor', 'admin')),
    password_hash text NOT NULL,
    skills        text[] NOT NULL DEFAULT '{}',
    capacity      integer NOT NULL DEFAULT 3 CONSTRAINT users_capacity_check CHECK (capacity BETWEEN 0 AND 100),
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_tenant_idx ON users (tenant_id, id);

-- Login throttling, shared by every replica. Keyed by "email:<address>" or "ip:<addr>";
-- not tenant data (it exists before anyone is authenticated).
CREATE TABLE login_attempts (
    key           text PRIMARY KEY,
    window_start  timestamptz NOT NULL,
    failures      integer NOT NULL DEFAULT 0
);
