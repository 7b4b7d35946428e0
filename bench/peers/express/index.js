'use strict';
/*
 * A RECONSTRUCTION of the QeetMart Express gateway's middleware stack, kept
 * only as an opt-in peer of qeetgw's benchmark (`--peers
 * express-reconstruction`).  It is NOT the reference: `make bench` measures
 * the real gateway (micros/api-gateway of github.com/qeetgroup/qeetmart, named
 * by EXPRESS_SRC), which served 1.4-1.8x this one's req/s in a same-run check.  Known
 * differences: this verifies with jsonwebtoken where the real one has its own
 * HS256 code, logs one JSON line where the real one logs two console.log
 * lines, and rewrites paths that the real one forwards mount-stripped.
 *
 * It is wired as the
 * gateway contract (SPEC) and the original gateway's description say, in
 * the original's order:
 *
 *   helmet -> cors (origin list, error callback) -> express.json() ->
 *   correlation id + access log -> /health, /health/services, /info ->
 *   express-rate-limit on /api/ -> HS256 auth on /api/ -> six
 *   http-proxy-middleware routes with a path rewrite.
 *
 * express.json() runs before the proxy, as in the original: it consumes a
 * JSON request body, so the proxy forwards the headers (Content-Length
 * included) without the body.  That is the original's bug and the bench
 * reports it; do not "fix" it here.
 *
 * One deliberate difference: the original mounted each proxy with
 * app.use('/api/v1/users', ...) and a string pathRewrite ('^/api/v1/users'),
 * which cannot match the mount-stripped req.url, so /api/v1/users/7 reached
 * the service as /7.  Here the rewrite prepends the service prefix, so the
 * upstream receives /users/7 and answers 200 as it does for the other peers;
 * the per-request work is the same.
 *
 * Environment: the variable names of SPEC.md (PORT, HOST, CORS_ORIGINS,
 * CORS_CREDENTIALS, REQUIRE_AUTH, JWT_SECRET, JWT_ISSUER, JWT_AUDIENCE,
 * RATE_LIMIT_WINDOW_MS, RATE_LIMIT_MAX, RATE_LIMIT_MESSAGE,
 * GATEWAY_PROXY_TIMEOUT_MS, JSON_BODY_LIMIT, *_SERVICE_URL, TRUST_PROXY), plus
 * LOG_REQUESTS (true: one JSON access line per request on stdout).
 */

const crypto = require('node:crypto');
const http = require('node:http');
const express = require('express');
const helmet = require('helmet');
const cors = require('cors');
const { rateLimit } = require('express-rate-limit');
const jwt = require('jsonwebtoken');
const { createProxyMiddleware } = require('http-proxy-middleware');

const env = process.env;
const bool = (value, fallback) =>
  value === undefined || value === '' ? fallback : value === 'true';

const config = {
  port: Number(env.PORT || 4000),
  host: env.HOST || '0.0.0.0',
  trustProxy: env.TRUST_PROXY || 'false',
  corsOrigins: (env.CORS_ORIGINS || env.CORS_ORIGIN ||
    'http://localhost:3000,http://localhost:3001')
    .split(',').map((s) => s.trim()).filter(Boolean),
  corsCredentials: bool(env.CORS_CREDENTIALS, false),
  requireAuth: bool(env.REQUIRE_AUTH, true),
  jwtSecret: env.JWT_SECRET || '',
  jwtIssuer: env.JWT_ISSUER || 'http://localhost:4001',
  jwtAudience: env.JWT_AUDIENCE || undefined,
  rateLimitWindowMs: Number(env.RATE_LIMIT_WINDOW_MS || 60000),
  rateLimitMax: Number(env.RATE_LIMIT_MAX || 1000),
  rateLimitMessage: env.RATE_LIMIT_MESSAGE ||
    'Too many requests from this IP, please try again later.',
  proxyTimeoutMs: Number(env.GATEWAY_PROXY_TIMEOUT_MS || 5000),
  jsonBodyLimit: env.JSON_BODY_LIMIT || '1mb',
  logRequests: bool(env.LOG_REQUESTS, true),
};

if (config.requireAuth && !config.jwtSecret) {
  console.error('JWT_SECRET is required when REQUIRE_AUTH=true');
  process.exit(1);
}

const services = [
  { name: 'auth-service', prefix: 'auth', url: env.AUTH_SERVICE_URL || 'http://localhost:4001', health: '/actuator/health' },
  { name: 'user-service', prefix: 'users', url: env.USER_SERVICE_URL || 'http://localhost:8082', health: '/actuator/health' },
  { name: 'product-service', prefix: 'products', url: env.PRODUCT_SERVICE_URL || 'http://localhost:8083', health: '/actuator/health' },
  { name: 'order-service', prefix: 'orders', url: env.ORDER_SERVICE_URL || 'http://localhost:8084', health: '/health' },
  { name: 'payment-service', prefix: 'payments', url: env.PAYMENT_SERVICE_URL || 'http://localhost:8085', health: '/health' },
  { name: 'inventory-service', prefix: 'inventory', url: env.INVENTORY_SERVICE_URL || 'http://localhost:8080', health: '/health' },
];

// The original's publicRoutes (it forgot /api/v1/auth/logout).
const publicPaths = new Set([
  '/api/v1/auth/register',
  '/api/v1/auth/login',
  '/api/v1/auth/refresh-token',
]);

// The original decoded the secret as base64 whenever it looked like base64
// (leniently), else used its UTF-8 bytes.
const jwtKey = /^[A-Za-z0-9+/=_-]+$/.test(config.jwtSecret) && config.jwtSecret.length % 4 === 0
  ? Buffer.from(config.jwtSecret, 'base64')
  : Buffer.from(config.jwtSecret, 'utf8');

function verifyJwt(token) {
  return jwt.verify(token, jwtKey, {
    algorithms: ['HS256', 'HS384', 'HS512'],
    issuer: config.jwtIssuer,
    audience: config.jwtAudience,
  });
}

function errorBody(message, code, correlationId) {
  return { success: false, error: { message, code, correlationId } };
}

const app = express();
app.set('trust proxy', config.trustProxy === 'true' ? true
  : /^\d+$/.test(config.trustProxy) ? Number(config.trustProxy) : false);

app.use(helmet());
app.use(cors({
  origin(origin, callback) {
    if (!origin || config.corsOrigins.includes('*') || config.corsOrigins.includes(origin)) {
      callback(null, true);
    } else {
      callback(new Error('Not allowed by CORS'));
    }
  },
  credentials: config.corsCredentials,
}));
app.use(express.json({ limit: config.jsonBodyLimit }));

// Correlation id and access log.
app.use((req, res, next) => {
  const given = req.headers['x-correlation-id'];
  req.correlationId = typeof given === 'string' && given ? given : `req-${crypto.randomUUID()}`;
  res.setHeader('x-correlation-id', req.correlationId);
  if (config.logRequests) {
    const start = process.hrtime.bigint();
    res.on('finish', () => {
      process.stdout.write(JSON.stringify({
        time: new Date().toISOString(),
        level: 'info',
        message: 'request',
        method: req.method,
        path: req.path,
        status: res.statusCode,
        duration_ms: Number(process.hrtime.bigint() - start) / 1e6,
        correlation_id: req.correlationId,
        client_ip: req.ip,
      }) + '\n');
    });
  }
  next();
});

app.get('/health', (req, res) => {
  res.json({ status: 'ok', service: 'api-gateway', timestamp: new Date().toISOString() });
});

function probe(service) {
  const started = Date.now();
  return new Promise((resolve) => {
    const request = http.get(new URL(service.health, service.url), { timeout: config.proxyTimeoutMs }, (response) => {
      response.resume();
      const healthy = response.statusCode >= 200 && response.statusCode < 300;
      resolve({ name: service.name, status: healthy ? 'healthy' : 'unhealthy', responseTime: Date.now() - started });
    });
    request.on('timeout', () => request.destroy(new Error('timeout')));
    request.on('error', (error) => resolve({
      name: service.name, status: 'unhealthy', responseTime: Date.now() - started, error: error.message,
    }));
  });
}

app.get('/health/services', async (req, res) => {
  const results = await Promise.all(services.map(probe));
  const ok = results.every((r) => r.status === 'healthy');
  res.status(ok ? 200 : 503).json({
    status: ok ? 'ok' : 'degraded', services: results, timestamp: new Date().toISOString(),
  });
});

app.get('/info', (req, res) => {
  res.json({
    name: 'Qeetmart API Gateway',
    version: '1.0.0',
    services: services.map((s) => ({ name: s.name, baseUrl: s.url })),
    timestamp: new Date().toISOString(),
  });
});

const limiter = rateLimit({
  windowMs: config.rateLimitWindowMs,
  limit: config.rateLimitMax,
  standardHeaders: 'draft-6',
  legacyHeaders: false,
  handler(req, res) {
    res.status(429).json(errorBody(config.rateLimitMessage, 'TOO_MANY_REQUESTS', req.correlationId));
  },
});
app.use('/api/', limiter);

// src/middleware/auth.middleware.ts, as the seed shows it.
app.use((req, res, next) => {
  if (!req.path.startsWith('/api/')) {
    return next();
  }
  if (!config.requireAuth || publicPaths.has(req.path)) {
    return next();
  }
  const authHeader = req.headers.authorization;
  const token = authHeader && authHeader.startsWith('Bearer ') ? authHeader.substring(7) : null;
  if (!token) {
    return res.status(401).json(errorBody('Authentication required', 'UNAUTHORIZED', req.correlationId));
  }
  try {
    const payload = verifyJwt(token);
    req.token = token;
    req.userId = payload.sub;
    return next();
  } catch (error) {
    return res.status(401).json(errorBody('Invalid or expired token', 'UNAUTHORIZED', req.correlationId));
  }
});

// src/routes/gateway.routes.ts: one http-proxy-middleware a service.
for (const service of services) {
  app.use(`/api/v1/${service.prefix}`, createProxyMiddleware({
    target: service.url,
    changeOrigin: true,
    xfwd: true,
    proxyTimeout: config.proxyTimeoutMs,
    // req.url is mount-stripped ('/7', '/', '/?q=1'): put the service prefix back.
    pathRewrite: (path) => `/${service.prefix}${path === '/' || path.startsWith('/?') ? path.slice(1) : path}`,
    on: {
      proxyReq(proxyReq, req) {
        if (req.token) {
          proxyReq.setHeader('authorization', `Bearer ${req.token}`);
        }
        proxyReq.setHeader('x-correlation-id', req.correlationId);
        proxyReq.setHeader('x-request-id', req.correlationId);
      },
      error(error, req, res) {
        if (res.headersSent || typeof res.status !== 'function') {
          res.destroy?.();
          return;
        }
        const timedOut = error && (error.code === 'ECONNRESET' || error.code === 'ETIMEDOUT');
        res.status(timedOut ? 504 : 502).json(errorBody(
          timedOut ? `Service ${service.name} timed out` : `Service ${service.name} is unavailable`,
          timedOut ? 'GATEWAY_TIMEOUT' : 'SERVICE_UNAVAILABLE',
          req.correlationId,
        ));
      },
    },
  }));
}

app.use((req, res) => {
  res.status(404).json(errorBody(`Route ${req.method} ${req.path} not found`, 'NOT_FOUND', req.correlationId));
});

// eslint-disable-next-line no-unused-vars
app.use((error, req, res, next) => {
  const status = error.status || error.statusCode || 500;
  res.status(status).json(errorBody(status === 500 ? 'Internal server error' : error.message,
    status === 413 ? 'PAYLOAD_TOO_LARGE' : status === 500 ? 'INTERNAL_ERROR' : 'BAD_REQUEST',
    req.correlationId));
});

const server = app.listen(config.port, config.host, () => {
  const address = server.address();
  console.error(`express peer listening on ${address.address}:${address.port}`);
});

function shutdown() {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
